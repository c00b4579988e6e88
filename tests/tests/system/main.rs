//! System tests, grouped by feature. Each test starts its own nats-server (real, with JetStream,
//! on a free port) and its own node in-process, mostly through `natter_system_tests::Scenario`.

mod agent;
mod authz;
mod bad_input;
mod browser;
mod chat;
mod checkin;
mod connections;
#[cfg(target_os = "linux")]
mod desktop_linux;
mod fanout;
mod identity;
mod incoming;
mod input;
mod limits;
mod links;
mod machines;
mod open_chats;
mod ops;
mod options;
mod ownership;
mod pages;
mod recovery;
mod reopen;
mod resume;
mod retention;
mod roles;
mod signals;
mod tls;
mod transcript;
mod users;
mod windows_agent;
