pub mod create;
pub mod demo;
pub mod get;
pub mod info;
