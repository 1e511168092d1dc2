pub mod create;
pub mod demo;
pub mod info;
