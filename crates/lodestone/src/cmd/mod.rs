pub mod create;
pub mod daemon;
pub mod demo;
pub mod dht;
pub mod get;
pub mod info;
pub mod many;
pub mod scrape;
