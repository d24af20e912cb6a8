//! ImageService. Served by the image-store crate once berthd embeds it (issue 5); until then
//! every RPC answers UNIMPLEMENTED.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::not_yet;

const WHY: &str = "berthd does not embed the image store yet (issues 3 and 5)";

#[derive(Debug, Default)]
pub struct Images;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        Err(not_yet("ListImages", WHY))
    }
    async fn image_status(
        &self,
        _: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        Err(not_yet("ImageStatus", WHY))
    }
    async fn pull_image(
        &self,
        _: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        Err(not_yet("PullImage", WHY))
    }
    async fn remove_image(
        &self,
        _: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        Err(not_yet("RemoveImage", WHY))
    }
    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        Err(not_yet("ImageFsInfo", WHY))
    }
}
