//! cri-server: berthd, the CRI v1 server.
//!
//! Not yet implemented: see issue 5.
