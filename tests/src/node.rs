//! A node in-process, and the operators that log in to it.

use natter::Config;

use crate::{Browser, StatusCode};

/// The password [`TestNode::scoped_operator`] gives `username` (for scripts that log in
/// themselves).
pub fn operator_password(username: &str) -> String {
    format!("{username}-password")
}

/// A node running in-process on a free port.
pub struct TestNode {
    pub node: natter::Node,
    pub base: String,
    pub config: Config,
}

impl TestNode {
    pub async fn start(config: Config) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = config;
        // Nodes on one nats-server need their own ids (their partition leases): the default
        // names the configured port, which every test node shares.
        if config.node.id == Config::defaults().node.id {
            config.node.id = format!("test-node-{}", addr.port());
        }
        config.http.listen = addr;
        config.http.public_url = format!("http://{addr}");
        // Started in a task of its own: a node's start is a deep, large future, and polled
        // inside a test's own future (itself inside a fixture's) it overflowed a test thread's
        // stack in debug builds. A task is polled from the scheduler, at the stack's base.
        let start_config = config.clone();
        let node = tokio::spawn(async move { natter::Node::start(listener, &start_config).await })
            .await
            .expect("the node's start task")
            .expect("start node");
        TestNode {
            node,
            base: format!("http://{addr}"),
            config,
        }
    }

    /// Adds an admin operator (sees every machine).
    pub async fn add_operator(&self, username: &str, name: &str, password: &str) {
        self.add_scoped_operator(username, name, password, None)
            .await
    }

    /// Adds an operator; `scopes: None` makes an admin.
    pub async fn add_scoped_operator(
        &self,
        username: &str,
        name: &str,
        password: &str,
        scopes: Option<&[&str]>,
    ) {
        let grants: Vec<String> = scopes
            .unwrap_or(&[])
            .iter()
            .map(|s| s.to_string())
            .collect();
        natter_actors::directory::put_operator(
            &self.node.stores.operators,
            username,
            name,
            scopes.is_none(),
            &grants,
            password,
        )
        .await
        .expect("add operator");
    }

    /// A logged-in admin operator's browser.
    pub async fn operator(&self, username: &str) -> Browser {
        self.scoped_operator(username, None).await
    }

    /// A logged-in operator's browser; `scopes: None` makes an admin.
    pub async fn scoped_operator(&self, username: &str, scopes: Option<&[&str]>) -> Browser {
        let password = operator_password(username);
        self.add_scoped_operator(
            username,
            &format!("{username} (operator)"),
            &password,
            scopes,
        )
        .await;
        let b = Browser::new(&self.base);
        let (status, body) = b
            .post(
                "/api/login",
                &serde_json::json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        b
    }

    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }

    /// Dies without draining, as a crashed node would ([`natter::Node::kill_for_test`]).
    pub async fn kill(self) {
        self.node.kill_for_test().await;
    }
}
