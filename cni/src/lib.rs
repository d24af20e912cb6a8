//! cni: the CNI client berthd uses for every sandbox, and berth's own plugins.
//!
//! Not yet implemented: see issue 4.
