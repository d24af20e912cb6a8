//! cli: the `berth` operator CLI.
//!
//! Not yet implemented: see issue 7.
