//! StreamContainers and StreamContainerStats (KEP-5825): the records of ListContainers and
//! ListContainerStats — built by the same functions, with the same filters — as server
//! streams of batches bounded in bytes (see [`crate::service::list_stream`]).

use cri_api::v1 as cri;

use super::{stats, status, ContainerService};
use crate::service::list_stream::{self, ListStream};

impl ContainerService {
    /// StreamContainers: ListContainers' containers, in batches.
    pub fn stream(
        &self,
        req: cri::StreamContainersRequest,
    ) -> ListStream<cri::StreamContainersResponse> {
        let inner = self.inner.clone();
        let filter = req.filter.unwrap_or_default();
        list_stream::serve(
            "StreamContainers",
            async move { Ok(status::containers(&inner, &filter)) },
            |containers| cri::StreamContainersResponse { containers },
        )
    }

    /// StreamContainerStats: ListContainerStats' stats, in batches.
    pub fn stream_stats(
        &self,
        req: cri::StreamContainerStatsRequest,
    ) -> ListStream<cri::StreamContainerStatsResponse> {
        let inner = self.inner.clone();
        let filter = req.filter.unwrap_or_default();
        list_stream::serve(
            "StreamContainerStats",
            async move { Ok(stats::records(&inner, filter).await?) },
            |container_stats| cri::StreamContainerStatsResponse { container_stats },
        )
    }
}
