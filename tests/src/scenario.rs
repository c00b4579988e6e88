//! The fixture most system tests start from: a nats-server, a node, agents and logged-in
//! operators, declared in one line and started together.
//!
//! ```ignore
//! let s = Scenario::new().machine("pc1.sales.acme", "carol").operator("alice").start().await;
//! let (session, carol) = s.open_chat().await;
//! ```

use std::time::Duration;

use natter::Config;
use natter_agent::Presence;
use serde_json::json;

use crate::{Browser, StatusCode, TestAgent, TestNats, TestNode};

/// How often a declared agent checks in unless the test says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// A change to the node's configuration, applied before it starts.
type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

/// What to start: node configuration changes, machines (each with a running agent) and
/// operators, in the order given.
#[derive(Default)]
pub struct Scenario {
    config_edits: Vec<ConfigEdit>,
    machines: Vec<(String, Presence, Duration)>,
    operators: Vec<OperatorSpec>,
}

#[derive(Clone)]
struct OperatorSpec {
    username: String,
    /// `None` makes an admin.
    scopes: Option<Vec<String>>,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// The scenario most tests start from: machine `pc1.sales.acme` with `carol` logged on, and
    /// the admin operator `alice`.
    pub fn alice_and_carol_on_pc1() -> Scenario {
        Scenario::new()
            .machine("pc1.sales.acme", "carol")
            .operator("alice")
    }

    /// Changes the node's configuration (it starts from [`TestNats::node_config`]).
    pub fn config(mut self, edit: impl FnOnce(&mut Config) + 'static) -> Scenario {
        self.config_edits.push(Box::new(edit));
        self
    }

    /// A machine whose agent runs with `user` logged on (`None`: nobody).
    pub fn machine<'a>(self, id: &str, user: impl Into<Option<&'a str>>) -> Scenario {
        self.machine_with(id, Presence::user(user.into()), DEFAULT_INTERVAL)
    }

    /// A machine whose agent reports `presence` every `interval`.
    pub fn machine_with(mut self, id: &str, presence: Presence, interval: Duration) -> Scenario {
        self.machines.push((id.into(), presence, interval));
        self
    }

    /// A logged-in admin operator (sees every machine).
    pub fn operator(self, username: &str) -> Scenario {
        self.add_operator(username, None)
    }

    /// A logged-in operator who sees only machines under `scopes`.
    pub fn scoped_operator(self, username: &str, scopes: &[&str]) -> Scenario {
        self.add_operator(
            username,
            Some(scopes.iter().map(|s| s.to_string()).collect()),
        )
    }

    fn add_operator(mut self, username: &str, scopes: Option<Vec<String>>) -> Scenario {
        self.operators.push(OperatorSpec {
            username: username.into(),
            scopes,
        });
        self
    }

    /// Starts the nats-server, the node, every agent (each has checked in when this returns)
    /// and logs every operator in.
    pub async fn start(self) -> Fixture {
        let nats = TestNats::start().await;
        let mut config = nats.node_config();
        for edit in self.config_edits {
            edit(&mut config);
        }
        let node = TestNode::start(config).await;
        let mut fixture = Fixture {
            nats,
            node,
            agents: Vec::new(),
            operators: Vec::new(),
        };
        for (id, presence, interval) in self.machines {
            fixture.add_machine_with(&id, presence, interval).await;
        }
        fixture.operators = log_in(&fixture.node, self.operators).await;
        fixture
    }
}

async fn log_in(node: &TestNode, operators: Vec<OperatorSpec>) -> Vec<(OperatorSpec, Browser)> {
    let mut out = Vec::new();
    for op in operators {
        let scopes: Option<Vec<&str>> = op
            .scopes
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect());
        let browser = node.scoped_operator(&op.username, scopes.as_deref()).await;
        out.push((op, browser));
    }
    out
}

/// A started [`Scenario`].
pub struct Fixture {
    pub nats: TestNats,
    pub node: TestNode,
    agents: Vec<TestAgent>,
    operators: Vec<(OperatorSpec, Browser)>,
}

impl Fixture {
    /// The running agent of `machine`.
    pub fn agent(&self, machine: &str) -> &TestAgent {
        self.agents
            .iter()
            .find(|a| a.machine == machine)
            .unwrap_or_else(|| panic!("no agent runs for {machine}"))
    }

    /// The browser `username` logged in with.
    pub fn operator(&self, username: &str) -> Browser {
        self.operators
            .iter()
            .find(|(op, _)| op.username == username)
            .map(|(_, browser)| browser.clone())
            .unwrap_or_else(|| panic!("no operator {username} in the scenario"))
    }

    /// Starts an agent for another machine, with `user` logged on; waits for its check-in.
    pub async fn add_machine<'a>(&mut self, machine: &str, user: impl Into<Option<&'a str>>) {
        self.add_machine_with(machine, Presence::user(user.into()), DEFAULT_INTERVAL)
            .await
    }

    /// Starts an agent reporting `presence` every `interval`; waits for its check-in.
    pub async fn add_machine_with(
        &mut self,
        machine: &str,
        presence: Presence,
        interval: Duration,
    ) {
        let agent =
            TestAgent::start_with(&self.nats, &self.node, machine, presence, interval).await;
        self.agents.push(agent);
    }

    /// Stops the agent of `machine` (the machine goes quiet).
    pub async fn stop_agent(&mut self, machine: &str) {
        let at = self
            .agents
            .iter()
            .position(|a| a.machine == machine)
            .unwrap_or_else(|| panic!("no agent runs for {machine}"));
        self.agents.remove(at).stop().await;
    }

    /// Shuts the node down, starts a new one with the same configuration on the same
    /// nats-server, and logs the operators in to it.
    pub async fn restart_node(self) -> Fixture {
        let Fixture {
            nats,
            node,
            agents,
            operators,
        } = self;
        let config = node.config.clone();
        node.shutdown().await;
        let node = TestNode::start(config).await;
        let operators = log_in(&node, operators.into_iter().map(|(op, _)| op).collect()).await;
        Fixture {
            nats,
            node,
            agents,
            operators,
        }
    }

    /// Opens a chat from the first operator to the first machine; see [`Fixture::open_chat_between`].
    pub async fn open_chat(&self) -> (String, Browser) {
        let operator = &self.operators.first().expect("an operator").0.username;
        let machine = &self.agents.first().expect("a machine").machine;
        self.open_chat_between(operator, machine).await
    }

    /// Starts a chat between `operator` and `machine`, and logs the machine user in through the
    /// link the agent was asked to open; returns the session id and the machine user's browser.
    pub async fn open_chat_between(&self, operator: &str, machine: &str) -> (String, Browser) {
        let session = self.operator(operator).new_chat(machine).await;
        let url = self.agent(machine).wait_for_chat_url().await;
        let prefix = format!("{}/m/{session}/#t=", self.node.base);
        assert!(
            url.starts_with(&prefix),
            "{url} does not start with {prefix}"
        );
        let token = &url[prefix.len()..];
        let user = Browser::new(&self.node.base);
        let (status, view) = user
            .post(&format!("/m/{session}/api/login"), &json!({"token": token}))
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["machine"], machine);
        (session, user)
    }

    /// Checks that `machine`'s agent still counts after whatever a test threw at the fleet: it
    /// checks in with user `dave`, and `operator` sees him.
    pub async fn assert_check_ins_still_count(&self, machine: &str, operator: &str) {
        self.agent(machine).check_in(Presence::user(Some("dave")));
        self.operator(operator)
            .wait_for(&format!("/api/machines/{machine}"), |v| v["user"] == "dave")
            .await;
    }

    /// Stops every agent, then the node.
    pub async fn shutdown(self) {
        for agent in self.agents {
            agent.stop().await;
        }
        self.node.shutdown().await;
    }
}
