//! The server's tests reach the shared helpers of `wsreactor-testkit` through here.
#![allow(unused_imports)] // each test file uses a different part

pub use wsreactor_testkit::process::*;
pub use wsreactor_testkit::raw::*;
pub use wsreactor_testkit::{launch, payload, Listening};
