//! The machine user's start page (`/start/`; issue 11, item 3): the agent opens
//! `/start/#t=<token>` when its user asks for a chat (`natter-agent chat`). The page posts the
//! token once for a short "start login" (cookie `natter_start`, Path=/start/), lists the
//! operators the machine user may reach (names and aliases only) and starts a chat with the one
//! they pick, which sends the page to that chat (`/m/<session>/`, logged in there).

use natter_actors::machines::group_of;
use natter_actors::protocol::{Participant, ParticipantKind, SessionCommand};
use natter_actors::roles::StartGrant;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::reply::Response;

use super::login::log_in_machine_user;
use super::models::{
    ReachableOperator, StartFromMachineRequest, StartPage, StartedFromMachine, TokenRequest,
};
use super::{json_reply, set_cookie};
use crate::Gateway;
use crate::auth;
use crate::error::{ApiError, ErrorKind};

pub const START_COOKIE: &str = "natter_start";
/// How long a start login lasts: long enough to pick an operator, and to come back to the
/// list after a chat.
pub const START_LOGIN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// A start login as kept in the logins bucket (under the SHA-256 of its cookie). Its fields
/// differ from an operator's or machine user's login, so neither is ever taken for the other.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct StartLogin {
    start_machine: String,
    start_user: String,
    /// Milliseconds since the epoch.
    start_expires_at: u64,
}

/// The one answer to every failed start-page login: no oracle.
fn invalid_link() -> ApiError {
    ApiError::new(ErrorKind::Unauthenticated, "this start link is not valid")
}

fn unavailable<E>(_: E) -> ApiError {
    ApiError::unavailable("could not check the start link; try again")
}

/// POST /start/api/login: uses the start token up and answers with the start page's data.
pub async fn login(gw: Gateway, body: TokenRequest) -> Result<Response, ApiError> {
    if body.token.is_empty() || body.token.len() > 128 {
        return Err(invalid_link());
    }
    let grant: StartGrant = gw
        .stores()
        .roles
        .take_start_token(&body.token)
        .await
        .map_err(unavailable)?
        .ok_or_else(invalid_link)?;
    let login = StartLogin {
        start_machine: grant.machine.clone(),
        start_user: grant.user.clone(),
        start_expires_at: natter_actors::now_ms()
            .saturating_add(START_LOGIN_TTL.as_millis() as u64),
    };
    let cookie = hex::encode(rand::random::<[u8; 32]>());
    let key = natter_actors::sha256_hex(&cookie);
    let json = serde_json::to_vec(&login).map_err(unavailable)?;
    gw.stores()
        .logins
        .put(&key, json.into())
        .await
        .map_err(unavailable)?;
    let page = start_page(&gw, &key, &login).await?;
    let mut r = json_reply(StatusCode::OK, &page);
    set_cookie(
        &mut r,
        &auth::login_cookie(
            START_COOKIE,
            &cookie,
            "/start/",
            START_LOGIN_TTL.as_secs(),
            gw.config().cookies_secure(),
        ),
    );
    Ok(r)
}

/// The start login behind a cookie, and its key; 401 without a live one.
async fn start_login(
    gw: &Gateway,
    cookie: Option<String>,
) -> Result<(String, StartLogin), ApiError> {
    let cookie = cookie.ok_or_else(ApiError::unauthenticated)?;
    if cookie.len() != 64 || !cookie.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::unauthenticated());
    }
    let key = natter_actors::sha256_hex(&cookie);
    let value = gw
        .stores()
        .logins
        .get(&key)
        .await
        .map_err(|_| ApiError::unavailable("could not check the login; try again"))?;
    value
        .and_then(|v| serde_json::from_slice::<StartLogin>(&v).ok())
        .filter(|l| natter_actors::now_ms() < l.start_expires_at)
        .map(|l| (key, l))
        .ok_or_else(ApiError::unauthenticated)
}

/// GET /start/api/operators
pub async fn operators(gw: Gateway, cookie: Option<String>) -> Result<Response, ApiError> {
    let (key, login) = start_login(&gw, cookie).await?;
    Ok(json_reply(
        StatusCode::OK,
        &start_page(&gw, &key, &login).await?,
    ))
}

/// POST /start/api/chats: a chat with the operator the machine user picked; the answer names
/// the session and the page to go to, with the machine user's login there set as a cookie.
pub async fn start_chat(
    gw: Gateway,
    cookie: Option<String>,
    body: StartFromMachineRequest,
) -> Result<Response, ApiError> {
    let (key, login) = start_login(&gw, cookie).await?;
    let machine = login.start_machine.clone();
    // The right may have been switched off since the link was issued.
    let allowed = gw
        .stores()
        .roles
        .may_start_chat(&machine)
        .await
        .map_err(|_| ApiError::unavailable("could not check the machine's role; try again"))?;
    if !allowed {
        return Err(ApiError::forbidden(
            "this machine's role does not allow starting a chat with operators",
        ));
    }
    if body.operator.is_empty() || body.operator.len() > 64 {
        return Err(ApiError::bad_request(
            "operator must be the id of an operator from the list",
        ));
    }
    let operator = reachable(&gw, &machine)
        .await?
        .into_iter()
        .find(|(username, _)| gw.alias_key().alias(&alias_scope(&key), username) == body.operator)
        .ok_or_else(|| {
            ApiError::not_found("that operator is not available now; pick another from the list")
        })?;
    let id = ulid::Ulid::new().to_string();
    let open = SessionCommand::OpenFromMachine {
        machine,
        user: login.start_user.clone(),
        operator: Participant {
            kind: ParticipantKind::Operator,
            id: operator.0,
            name: operator.1,
        },
    };
    let ack = match gw.command(&id, &open).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "a chat with this machine is already in progress",
            ));
        }
        answer => answer?,
    };
    let token = ack
        .token
        .ok_or_else(|| ApiError::unavailable("the session did not give a chat link"))?;
    let (cookie, _) = log_in_machine_user(&gw, &id, token).await?;
    let started = StartedFromMachine {
        url: format!("/m/{id}/"),
        session: id,
    };
    let mut r = json_reply(StatusCode::CREATED, &started);
    set_cookie(&mut r, &cookie);
    Ok(r)
}

/// What the aliases of one start login are made in: aliases differ between start logins.
fn alias_scope(login_key: &str) -> String {
    format!("start:{login_key}")
}

async fn start_page(gw: &Gateway, key: &str, login: &StartLogin) -> Result<StartPage, ApiError> {
    let scope = alias_scope(key);
    let mut operators: Vec<ReachableOperator> = reachable(gw, &login.start_machine)
        .await?
        .into_iter()
        .map(|(username, name)| ReachableOperator {
            id: gw.alias_key().alias(&scope, &username),
            name,
        })
        .collect();
    operators.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(StartPage {
        machine: login.start_machine.clone(),
        user: login.start_user.clone(),
        operators,
    })
}

/// The operators `machine`'s user may reach now, as (username, display name): present on the
/// Chat page, with the machine in their scope, not hiding from machine users.
async fn reachable(gw: &Gateway, machine: &str) -> Result<Vec<(String, String)>, ApiError> {
    Ok(gw
        .presence()
        .reachable_from_machine(group_of(machine))
        .into_iter()
        .map(|p| (p.username, p.name))
        .collect())
}
