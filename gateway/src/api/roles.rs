//! Machine roles, for admins only (`/api/roles`, `/api/machines/{id}/role`): list, create and
//! delete roles, switch their right "may start a chat with operators", assign machines.

use natter_actors::roles::{RoleError, RoleView};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::json_reply;
use super::models::{AssignRoleRequest, CreateRoleRequest, MachineRole, SetRoleRequest};
use crate::Gateway;
use crate::auth::Login;
use crate::error::{ApiError, ErrorKind};

/// Only admins manage roles.
fn admin_only(l: &Login) -> Result<(), ApiError> {
    match l.admin {
        true => Ok(()),
        false => Err(ApiError::forbidden("only admins manage machine roles")),
    }
}

fn api_error(e: RoleError) -> ApiError {
    match e {
        RoleError::NoSuchRole(_) => ApiError::not_found(e.to_string()),
        RoleError::Exists(_) => ApiError::new(ErrorKind::Conflict, e.to_string()),
        e if e.is_bad_request() => ApiError::bad_request(e.to_string()),
        e => {
            tracing::warn!(error = %e, "machine roles store");
            ApiError::unavailable("the roles store did not answer; try again")
        }
    }
}

/// The role `name` as listed (with its machines).
async fn view_of(gw: &Gateway, name: &str) -> Result<RoleView, ApiError> {
    let roles = gw.stores().roles.list().await.map_err(api_error)?;
    roles
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found(format!("there is no role {name}")))
}

/// GET /api/roles
pub async fn list(l: Login, gw: Gateway) -> Result<Response, ApiError> {
    admin_only(&l)?;
    let roles = gw.stores().roles.list().await.map_err(api_error)?;
    Ok(json_reply(StatusCode::OK, &roles))
}

/// POST /api/roles
pub async fn create(l: Login, gw: Gateway, body: CreateRoleRequest) -> Result<Response, ApiError> {
    admin_only(&l)?;
    let name = body.name.trim();
    let r = gw
        .stores()
        .roles
        .create(name, body.may_start_chat)
        .await
        .map_err(api_error)?;
    tracing::info!(admin = %l.who.id, role = %r.name, may_start_chat = r.may_start_chat, "machine role created");
    let view = RoleView {
        name: r.name,
        may_start_chat: r.may_start_chat,
        machines: Vec::new(),
    };
    Ok(json_reply(StatusCode::CREATED, &view))
}

/// PUT /api/roles/{name}
pub async fn set(
    name: String,
    l: Login,
    gw: Gateway,
    body: SetRoleRequest,
) -> Result<Response, ApiError> {
    admin_only(&l)?;
    gw.stores()
        .roles
        .set_may_start_chat(&name, body.may_start_chat)
        .await
        .map_err(api_error)?;
    tracing::info!(admin = %l.who.id, role = %name, may_start_chat = body.may_start_chat, "machine role changed");
    Ok(json_reply(StatusCode::OK, &view_of(&gw, &name).await?))
}

/// DELETE /api/roles/{name}
pub async fn delete(name: String, l: Login, gw: Gateway) -> Result<Response, ApiError> {
    admin_only(&l)?;
    gw.stores().roles.delete(&name).await.map_err(api_error)?;
    tracing::info!(admin = %l.who.id, role = %name, "machine role deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// PUT /api/machines/{id}/role: `{"role": "<name>"}` assigns, `{"role": null}` unassigns.
pub async fn assign(
    machine: String,
    l: Login,
    gw: Gateway,
    body: AssignRoleRequest,
) -> Result<Response, ApiError> {
    admin_only(&l)?;
    let roles = &gw.stores().roles;
    match body.role.as_deref() {
        Some(role) => roles.assign(&machine, role).await.map_err(api_error)?,
        None => {
            roles.unassign(&machine).await.map_err(api_error)?;
        }
    }
    tracing::info!(admin = %l.who.id, %machine, role = ?body.role, "machine role assigned");
    Ok(json_reply(
        StatusCode::OK,
        &MachineRole {
            machine,
            role: body.role,
        },
    ))
}
