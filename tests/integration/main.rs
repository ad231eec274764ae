//! The one integration-test binary (see STYLE.md): every suite is a module here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
