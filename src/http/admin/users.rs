//! `/api/users`: console accounts (`walua user …`). Answers with the admin token, or for a
//! signed-in console admin (see [`crate::console::accounts::console_admin`]). Password
//! hashes never leave: answers carry the name, the role and when the account was created.
//!
//! The first account: the admin token creates accounts while none exists, so the first one
//! should be an admin, who can then manage the others from the console. A first account of
//! another role is created all the same, with a `warning` in the answer.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::{read_body, store_error};
use crate::App;
use crate::console::accounts::{Role, hash_password, validate_password, validate_user_name};
use crate::http::{HttpResponse, error, json};
use crate::store::users::{User, UserRemoval};

/// An account as the API shows it: no hash.
fn view(user: &User) -> serde_json::Value {
    serde_json::json!({
        "name": user.name,
        "role": user.role,
        "created_at": crate::scheduler::rfc3339(user.created_ms),
    })
}

/// `GET /api/users`: every account, by name.
pub(super) async fn list(app: &App) -> HttpResponse {
    match app.store.blocking(|s| s.users()).await {
        Ok(users) => json(
            StatusCode::OK,
            &serde_json::json!({ "users": users.iter().map(view).collect::<Vec<_>>() }),
        ),
        Err(e) => store_error(e),
    }
}

/// The body of `POST /api/users`.
#[derive(serde::Deserialize)]
struct NewUser {
    name: String,
    role: String,
    password: String,
}

/// The body of `POST /api/users/{name}/password`.
#[derive(serde::Deserialize)]
struct NewPassword {
    password: String,
}

/// Reads a JSON body of type `T`: 400 when it is not that JSON.
async fn read_json<T: serde::de::DeserializeOwned>(app: &App, req: Request<Incoming>) -> Result<T, HttpResponse> {
    let body = read_body(app, req).await?;
    serde_json::from_slice(&body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}

/// Hashes a password off the async runtime.
async fn hash(password: String) -> Result<String, HttpResponse> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// `POST /api/users` `{"name","role","password"}`: 201 with the account; 409 when the name
/// is taken; 422 for a bad name, role or password.
pub(super) async fn create(app: &App, req: Request<Incoming>) -> HttpResponse {
    let new: NewUser = match read_json(app, req).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let role: Role = match new.role.parse() {
        Ok(r) => r,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    if let Err(why) = validate_user_name(&new.name).and_then(|()| validate_password(&new.password)) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let password_hash = match hash(new.password).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let now = crate::store::now_ms();
    let user = User {
        name: new.name.clone(),
        role,
        password_hash,
        created_ms: now,
        updated_ms: now,
    };
    let answer = view(&user);
    let result = app
        .store
        .blocking(move |s| {
            let created = s.user_add(user)?;
            let admin_exists = s.users()?.iter().any(|u| u.role == Role::Admin);
            Ok((created, admin_exists))
        })
        .await;
    match result {
        Ok((false, _)) => error(StatusCode::CONFLICT, format!("user `{}` already exists", new.name)),
        Ok((true, admin_exists)) => {
            tracing::info!(user = %new.name, %role, "console account created");
            let mut answer = answer;
            if !admin_exists {
                answer["warning"] = serde_json::json!(
                    "no admin account exists yet: create one (walua user add NAME --role admin) to manage accounts from the console"
                );
            }
            json(StatusCode::CREATED, &answer)
        }
        Err(e) => store_error(e),
    }
}

/// `POST /api/users/{name}/password` `{"password"}`: 200, the account's sessions signed out;
/// 404 for an unknown account; 422 for a bad password.
pub(super) async fn set_password(app: &App, name: &str, req: Request<Incoming>) -> HttpResponse {
    let new: NewPassword = match read_json(app, req).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(why) = validate_password(&new.password) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let password_hash = match hash(new.password).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let n = name.to_string();
    match app
        .store
        .blocking(move |s| s.user_set_password(&n, password_hash))
        .await
    {
        Ok(true) => {
            tracing::info!(user = %name, "console password changed; its sessions are signed out");
            json(
                StatusCode::OK,
                &serde_json::json!({ "name": name, "password_changed": true }),
            )
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no user `{name}`")),
        Err(e) => store_error(e),
    }
}

/// `DELETE /api/users/{name}`: 200, the account's sessions signed out; 404 for an unknown
/// account; 409 for the last admin.
pub(super) async fn remove(app: &App, name: &str) -> HttpResponse {
    let n = name.to_string();
    match app.store.blocking(move |s| s.user_remove_keeping_an_admin(&n)).await {
        Ok(UserRemoval::Removed) => {
            tracing::info!(user = %name, "console account removed");
            json(StatusCode::OK, &serde_json::json!({ "name": name, "removed": true }))
        }
        Ok(UserRemoval::Unknown) => error(StatusCode::NOT_FOUND, format!("no user `{name}`")),
        Ok(UserRemoval::LastAdmin) => error(
            StatusCode::CONFLICT,
            format!("`{name}` is the last admin: add another admin before removing it"),
        ),
        Err(e) => store_error(e),
    }
}
