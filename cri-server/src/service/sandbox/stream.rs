//! StreamPodSandboxes, StreamPodSandboxStats and StreamPodSandboxMetrics (KEP-5825): the
//! records of ListPodSandbox, ListPodSandboxStats and ListPodSandboxMetrics — built by the
//! same functions, with the same filters — as server streams of batches bounded in bytes
//! (see [`crate::service::list_stream`]).

use cri_api::v1 as cri;

use super::{stats, status, SandboxService};
use crate::service::container::ContainerService;
use crate::service::list_stream::{self, ListStream};

impl SandboxService {
    /// StreamPodSandboxes: ListPodSandbox's sandboxes, in batches.
    pub fn stream(
        &self,
        req: cri::StreamPodSandboxesRequest,
    ) -> ListStream<cri::StreamPodSandboxesResponse> {
        let ctx = self.inner.clone();
        let req = cri::ListPodSandboxRequest { filter: req.filter };
        list_stream::serve(
            "StreamPodSandboxes",
            async move { Ok(status::list(&ctx, req).await?.items) },
            |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes },
        )
    }

    /// StreamPodSandboxStats: ListPodSandboxStats' stats, in batches.
    pub fn stream_stats(
        &self,
        req: cri::StreamPodSandboxStatsRequest,
        containers: &ContainerService,
    ) -> ListStream<cri::StreamPodSandboxStatsResponse> {
        let (ctx, containers) = (self.inner.clone(), containers.clone());
        let req = cri::ListPodSandboxStatsRequest { filter: req.filter };
        list_stream::serve(
            "StreamPodSandboxStats",
            async move { Ok(stats::list_stats(&ctx, req, &containers).await?.stats) },
            |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats },
        )
    }

    /// StreamPodSandboxMetrics: ListPodSandboxMetrics' pod metrics, in batches.
    pub fn stream_metrics(
        &self,
        containers: &ContainerService,
    ) -> ListStream<cri::StreamPodSandboxMetricsResponse> {
        let (ctx, containers) = (self.inner.clone(), containers.clone());
        list_stream::serve(
            "StreamPodSandboxMetrics",
            async move { Ok(stats::metrics(&ctx, &containers).await?.pod_metrics) },
            |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )
    }
}
