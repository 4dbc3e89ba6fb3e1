//! `/v1/instances[/{name}]`: list, create, read and delete instances. Creating and deleting
//! start an operation and answer `202 Accepted` with its id at once.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use toygres_common::app_access::{AppAccess, AppConnection};
use toygres_common::controller_api::{
    ConnectionInfo, CreateInstanceRequest, DeleteInstanceQuery, EventList, EventsQuery,
    InstanceDetail, MemberView, OperationAccepted, ValidatedCreateInstance,
};
use toygres_common::names::validate_instance_name;

use toygres_common::http_api::{BodyRejection, JsonObject};
use toygres_common::ErrorBody;

use super::types::InstanceList;
use super::{ApiError, ApiState};
use crate::parameters::builtin::for_new_instance;
use crate::platform::SecretRefs;

/// `GET /v1/instances`.
#[utoipa::path(get, path = "/v1/instances", tag = "instances", responses((status = 200, description = "The live instances", body = InstanceList), (status = 401, description = "Missing or wrong token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<InstanceList>, ApiError> {
    let instances = state.cms.list_instances().await?;
    Ok(Json(InstanceList { instances }))
}

/// `POST /v1/instances`.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = CreateInstanceRequest, responses((status = 202, description = "Creation started", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 409, description = "The instance exists", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<ApiState>,
    body: Result<JsonObject<CreateInstanceRequest>, BodyRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let JsonObject(request) = body?;
    let mut spec = ValidatedCreateInstance::try_from(request)?;
    spec.parameters = for_new_instance(
        spec.profile.as_deref(),
        spec.size.as_ref(),
        &spec.parameters,
    )
    .map_err(|e| ApiError::BadRequest(format!("parameters: {e}")))?;
    let engine = state.engine()?;
    let accepted = engine.create_instance(spec).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `GET /v1/instances/{name}`.
#[utoipa::path(get, path = "/v1/instances/{name}", tag = "instances", params(("name" = String, Path, description = "Instance name")), responses((status = 200, description = "The instance", body = InstanceDetail), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<InstanceDetail>, ApiError> {
    validate_name(&name)?;
    let instance = state
        .cms
        .get_instance(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("instance {name} does not exist")))?;
    let members = state.cms.list_members(&name).await?;
    let last_operation = state.cms.latest_operation(&name).await?;
    let refs = SecretRefs::for_instance(&name);
    let platform = state.platform.as_ref();
    let password_location =
        platform.and_then(|platform| platform.secret_location(&refs.superuser_password));
    let passfile =
        platform.and_then(|platform| platform.passfile_location(&refs.superuser_password));
    let app = state.cms.instance_app_access(&name).await?;
    let live =
        instance.summary.parsed_state() != Some(toygres_common::domain::InstanceState::Deleted);
    // Kubernetes: the Services' names; local: the proxies on the controller's host.
    let service_hosts = platform.and_then(|platform| platform.endpoint_hosts(&name));
    let hosts = match &service_hosts {
        Some((rw, ro)) => EndpointHosts { rw, ro },
        None => EndpointHosts::same(&state.endpoint_host),
    };
    let connection = match (instance.summary.rw_port, instance.summary.ro_port) {
        (Some(rw), Some(ro)) if live => {
            let mut info = connection_info(hosts, rw, ro, &members, password_location);
            info.passfile = passfile;
            info.app = app.map(|app| {
                let secret = refs.app_password();
                app_connection(
                    hosts,
                    rw,
                    ro,
                    &members,
                    &app,
                    platform.and_then(|platform| platform.secret_location(&secret)),
                    platform.and_then(|platform| platform.passfile_location(&secret)),
                )
            });
            let ca_file = platform.and_then(|platform| platform.ca_file_location(&name));
            with_tls(&mut info, ca_file.as_deref());
            Some(info)
        }
        _ => None,
    };
    let ro = if live {
        super::ro::endpoint_view(&state, &name).await?
    } else {
        None
    };
    Ok(Json(InstanceDetail {
        summary: instance.summary,
        replicas: instance.replicas,
        members,
        connection,
        last_operation,
        ro,
        size: state.cms.instance_size(&name).await?,
    }))
}

/// `DELETE /v1/instances/{name}[?keep_data=true]`.
#[utoipa::path(delete, path = "/v1/instances/{name}", tag = "instances", params(("name" = String, Path, description = "Instance name"), ("keep_data" = Option<bool>, Query, description = "Keep the members' data")), responses((status = 202, description = "Deletion started", body = OperationAccepted), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody), (status = 404, description = "No such instance", body = ErrorBody), (status = 409, description = "Another operation runs", body = ErrorBody), (status = 429, description = "The instance's operation queue is full", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<DeleteInstanceQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<OperationAccepted>), ApiError> {
    let Query(query) = query?;
    validate_name(&name)?;
    let engine = state.engine()?;
    let accepted = engine.delete_instance(&name, query.keep_data).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// `GET /v1/instances/{name}/events[?limit=N][&since=ID]`: oldest first, the newest 200 unless
/// asked otherwise.
#[utoipa::path(get, path = "/v1/instances/{name}/events", tag = "instances", params(("name" = String, Path, description = "Instance name"), EventsQuery), responses((status = 200, description = "The newest events, oldest first", body = EventList), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)), security(("bearer" = [])))]
pub async fn events(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventList>, ApiError> {
    let Query(query) = query?;
    validate_name(&name)?;
    let limit = query.page()?;
    let events = state
        .cms
        .list_events_page(&name, limit, query.since)
        .await?;
    Ok(Json(EventList { events }))
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    validate_instance_name(name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The hosts the rw and ro endpoints answer on.
#[derive(Debug, Clone, Copy)]
pub struct EndpointHosts<'a> {
    pub rw: &'a str,
    pub ro: &'a str,
}

impl<'a> EndpointHosts<'a> {
    /// Both endpoints on one host (the local proxies).
    pub fn same(host: &'a str) -> Self {
        Self { rw: host, ro: host }
    }
}

/// How to reach an instance: its endpoints, and every member for clients that find the primary
/// themselves.
pub fn connection_info(
    hosts: EndpointHosts<'_>,
    rw_port: u16,
    ro_port: u16,
    members: &[MemberView],
    password_location: Option<String>,
) -> ConnectionInfo {
    const USER: &str = "postgres";
    const DATABASE: &str = "postgres";
    let url = |hosts: &str| format!("postgresql://{USER}@{hosts}/{DATABASE}");
    let member_hosts: Vec<&str> = members
        .iter()
        .filter_map(|m| m.address.as_deref())
        .collect();
    let EndpointHosts {
        rw: rw_host,
        ro: ro_host,
    } = hosts;
    let multi_host = if member_hosts.is_empty() {
        format!(
            "{}?target_session_attrs=read-write",
            url(&format!("{rw_host}:{rw_port}"))
        )
    } else {
        format!(
            "{}?target_session_attrs=read-write",
            url(&member_hosts.join(","))
        )
    };
    ConnectionInfo {
        user: USER.into(),
        database: DATABASE.into(),
        password_location,
        rw: url(&format!("{rw_host}:{rw_port}")),
        ro: url(&format!("{ro_host}:{ro_port}")),
        multi_host,
        passfile: None,
        app: None,
    }
}

/// How applications reach an instance: as the owner of its application database. With a
/// `passfile`, every URI names it, so psql and libpq drivers connect with the URI as printed
/// and the password never appears in it.
pub fn app_connection(
    hosts: EndpointHosts<'_>,
    rw_port: u16,
    ro_port: u16,
    members: &[MemberView],
    app: &AppAccess,
    password_location: Option<String>,
    passfile: Option<String>,
) -> AppConnection {
    let passfile_param = passfile
        .as_deref()
        .map(|path| format!("passfile={}", uri_encode(path)));
    let url = |hosts: &str, params: &[&str]| {
        let params: Vec<&str> = params
            .iter()
            .copied()
            .chain(passfile_param.as_deref())
            .collect();
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        format!(
            "postgresql://{}@{hosts}/{}{query}",
            uri_encode(&app.owner),
            uri_encode(&app.database)
        )
    };
    let member_hosts: Vec<&str> = members
        .iter()
        .filter_map(|m| m.address.as_deref())
        .collect();
    let EndpointHosts {
        rw: rw_host,
        ro: ro_host,
    } = hosts;
    let all_hosts = if member_hosts.is_empty() {
        format!("{rw_host}:{rw_port}")
    } else {
        member_hosts.join(",")
    };
    AppConnection {
        user: app.owner.clone(),
        database: app.database.clone(),
        host: rw_host.to_string(),
        rw_port,
        ro_port,
        password_location,
        rw: url(&format!("{rw_host}:{rw_port}"), &[]),
        ro: url(&format!("{ro_host}:{ro_port}"), &[]),
        multi_host: url(&all_hosts, &["target_session_attrs=read-write"]),
        passfile,
    }
}

/// Adds TLS to every printed URI: `sslmode=verify-full&sslrootcert=<CA file>` where the
/// platform keeps the instance's CA in a file, so the client verifies it reaches a member of the
/// instance; `sslmode=require` otherwise (the client has no CA file to verify with).
fn with_tls(info: &mut ConnectionInfo, ca_file: Option<&str>) {
    let params = match ca_file {
        Some(path) => format!("sslmode=verify-full&sslrootcert={}", uri_encode(path)),
        None => "sslmode=require".to_string(),
    };
    let add = |uri: &mut String| {
        let separator = if uri.contains('?') { '&' } else { '?' };
        uri.push(separator);
        uri.push_str(&params);
    };
    for uri in [&mut info.rw, &mut info.ro, &mut info.multi_host] {
        add(uri);
    }
    if let Some(app) = &mut info.app {
        for uri in [&mut app.rw, &mut app.ro, &mut app.multi_host] {
            add(uri);
        }
    }
}

/// Percent-encodes what a URI component may not hold as is (libpq decodes it).
fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_uris_name_the_owner_the_database_and_the_passfile() {
        let app = AppAccess {
            owner: "shop".into(),
            database: "orders".into(),
        };
        let info = app_connection(
            EndpointHosts::same("127.0.0.1"),
            5001,
            5002,
            &[],
            &app,
            Some("/h/app-password".into()),
            Some("/h/my secrets/app-password.pgpass".into()),
        );
        let passfile = "passfile=/h/my%20secrets/app-password.pgpass";
        assert_eq!(
            info.rw,
            format!("postgresql://shop@127.0.0.1:5001/orders?{passfile}")
        );
        assert_eq!(
            info.ro,
            format!("postgresql://shop@127.0.0.1:5002/orders?{passfile}")
        );
        assert_eq!(
            info.multi_host,
            format!(
                "postgresql://shop@127.0.0.1:5001/orders?target_session_attrs=read-write&{passfile}"
            )
        );
        let bare = app_connection(EndpointHosts::same("h"), 1, 2, &[], &app, None, None);
        assert_eq!(bare.rw, "postgresql://shop@h:1/orders");
        assert_eq!(
            bare.multi_host,
            "postgresql://shop@h:1/orders?target_session_attrs=read-write"
        );
    }

    #[test]
    fn rw_and_ro_may_answer_on_different_hosts() {
        let hosts = EndpointHosts {
            rw: "orders-rw.db.svc",
            ro: "orders-ro.db.svc",
        };
        let info = connection_info(hosts, 5432, 5432, &[], None);
        assert_eq!(
            info.rw,
            "postgresql://postgres@orders-rw.db.svc:5432/postgres"
        );
        assert_eq!(
            info.ro,
            "postgresql://postgres@orders-ro.db.svc:5432/postgres"
        );
        assert_eq!(
            info.multi_host,
            "postgresql://postgres@orders-rw.db.svc:5432/postgres?target_session_attrs=read-write"
        );
    }

    #[test]
    fn printed_uris_verify_the_server_against_the_instance_ca() {
        let mut info = connection_info(EndpointHosts::same("127.0.0.1"), 5001, 5002, &[], None);
        info.app = Some(app_connection(
            EndpointHosts::same("127.0.0.1"),
            5001,
            5002,
            &[],
            &AppAccess {
                owner: "shop".into(),
                database: "orders".into(),
            },
            None,
            Some("/h/app.pgpass".into()),
        ));
        with_tls(&mut info, Some("/h/my ca.crt"));
        let tls = "sslmode=verify-full&sslrootcert=/h/my%20ca.crt";
        assert_eq!(
            info.rw,
            format!("postgresql://postgres@127.0.0.1:5001/postgres?{tls}")
        );
        assert!(info.multi_host.ends_with(&format!("read-write&{tls}")));
        let app = info.app.unwrap();
        assert_eq!(
            app.rw,
            format!("postgresql://shop@127.0.0.1:5001/orders?passfile=/h/app.pgpass&{tls}")
        );
        let mut bare = connection_info(EndpointHosts::same("h"), 1, 2, &[], None);
        with_tls(&mut bare, None);
        assert_eq!(
            bare.ro,
            "postgresql://postgres@h:2/postgres?sslmode=require"
        );
    }
}
