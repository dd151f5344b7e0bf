//! One module per subcommand of the command line (`cli.rs` parses and dispatches). A
//! command builds what it needs from the settings, through `crate::wiring` where another
//! command builds the same thing; no command calls into another.

pub mod check_config;
pub mod codec_server;
pub mod destinations;
pub mod erase;
pub mod migrate;
pub mod receive;
pub mod register_search_attributes;
pub mod replay;
pub mod run;
pub mod send_sample;
