//! StreamImages (KEP-5825): the images of ListImages — built by the same function, with the
//! same filter — as a server stream of batches bounded in bytes (see
//! [`crate::service::list_stream`]).

use cri_api::v1 as cri;

use super::{list, Images};
use crate::service::list_stream::{self, ListStream};

pub(super) fn stream(
    images: &Images,
    req: cri::StreamImagesRequest,
) -> ListStream<cri::StreamImagesResponse> {
    let store = images.store.clone();
    list_stream::serve(
        "StreamImages",
        async move { Ok(list::records(store, req.filter).await?) },
        |images| cri::StreamImagesResponse { images },
    )
}
