//! `GET /v1/openapi.json`: the API's OpenAPI document, generated from the handlers' annotations
//! and the request and response types (utoipa), so it cannot drift from the code.

use axum::Json;
use toygres_common::openapi::BearerAuth;
use utoipa::OpenApi;

use toygres_common::backup_api::*;
use toygres_common::controller_api::*;
use toygres_common::parameters_api::*;
use toygres_common::{ErrorBody, ErrorDetail};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Toygres controller API", description = "PostgreSQL as a service: instances, their standbys, their backups, and the operations on them."),
    paths(
        super::instances::list,
        super::instances::create,
        super::instances::get,
        super::instances::delete,
        super::instances::events,
        super::replicas::status,
        super::replicas::add,
        super::replicas::remove,
        super::ha::switchover,
        super::ha::failover,
        super::credentials::rotate,
        super::ha::get_settings,
        super::ha::set_settings,
        super::ro::get_settings,
        super::ro::set_settings,
        super::stats::stats,
        super::operations::get,
        super::operations::cancel,
        super::backups::create,
        super::backups::list,
        super::backups::get,
        super::backups::restore,
        super::backups::restore_point,
        super::backups::get_schedule,
        super::backups::set_schedule,
        super::backups::cleanup_plan,
        super::backups::cleanup,
        super::backups::delete,
        super::backups::window,
        super::backups::verify,
        super::store_secrets::put,
        super::store_secrets::get,
        super::store_secrets::delete,
        super::parameters::catalog,
        super::parameters::get,
        super::parameters::set,
        super::parameters::profile,
        super::member_report::report,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, CreateInstanceRequest, OperationAccepted, Operation,
        Progress, InstanceSummary, InstanceList, InstanceDetail, MemberView, ConnectionInfo,
        EventList, Event, AddReplicaRequest, ReplicationStatus, SwitchoverRequest,
        FailoverRequest, HaSettings, HaSettingsPatch, SyncModeSetting, Handover,
        BackupConfigRequest, RetentionSettings, CreateBackupRequest, BackupAccepted, BackupView,
        BackupList, RestoreRequest, RestorePointCreate, RestorePointView, BackupScheduleRequest, BackupScheduleView,
        CleanupPlan, KeptBackup, RecoverabilityWindow,
        toygres_common::store_secret_api::StoreSecretRequest,
        toygres_common::store_secret_api::StoreSecretView,
        toygres_common::app_access::AppConnection,
        toygres_common::credentials_api::RotateCredentialsRequest,
        toygres_common::credentials_api::CredentialRole,
        toygres_common::ro_api::RoSettings, toygres_common::ro_api::RoSettingsPatch,
        toygres_common::ro_api::RoFallback, toygres_common::ro_api::RoBalance,
        toygres_common::ro_api::RoEndpointView, toygres_common::ro_api::RoBackend,
        toygres_common::ro_api::RoBackendState,
        toygres_common::stats_api::FleetStats, toygres_common::stats_api::MemberLag,
        InstanceSize, ParameterCatalog, CatalogEntry, ParameterCategory, SetInstanceParameters,
        ApplyMode, PrimaryUpdate, InstanceParameters, DesiredParameter, MemberParameter,
        AppliedState, ApplyProfile, ProfilePlan, ProfileChange,
        toygres_common::member_report::MemberReport,
        toygres_common::member_report::ReportAnswer,
        toygres_common::member_report::ReportKind, toygres_common::sidecar_api::Role,
    )),
    modifiers(&BearerAuth),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `/v1/…` paths the router in `api/mod.rs` serves (but this document's own).
    fn routed_paths() -> BTreeSet<String> {
        toygres_common::openapi::routed_paths(include_str!("mod.rs"))
            .into_iter()
            .filter(|path| path.starts_with("/v1/"))
            .collect()
    }

    #[test]
    fn the_document_lists_every_route_and_the_bearer_scheme() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let paths = json["paths"].as_object().cloned().unwrap_or_default();
        // Every route of the router is documented, and every documented path is routed: the
        // list is read from the router itself, so a new route needs no entry here.
        let routed = routed_paths();
        assert!(routed.len() > 20, "{routed:?}");
        for path in &routed {
            assert!(paths.contains_key(path), "{path} missing");
        }
        for path in paths.keys() {
            assert!(routed.contains(path), "{path} is documented but not routed");
        }
        assert!(json["paths"]["/v1/instances"]["post"].is_object());
        assert!(json["paths"]["/v1/operations/{id}"]["delete"].is_object());
        assert!(json["paths"]["/v1/instances/{name}/parameters"]["put"].is_object());
        let set = &json["components"]["schemas"]["SetInstanceParameters"]["properties"];
        assert!(set["primary_update"].is_object(), "{set}");
        assert!(set["apply_at"].is_object(), "{set}");
        // Generated clients and fuzzers see the real contract of a name.
        let name = &json["components"]["schemas"]["CreateInstanceRequest"]["properties"]["name"];
        assert_eq!(name["maxLength"].as_u64(), Some(40), "{name}");
        assert!(name["pattern"]
            .as_str()
            .is_some_and(|p| p.starts_with("^[a-z]")));
        let replicas =
            &json["components"]["schemas"]["CreateInstanceRequest"]["properties"]["replicas"];
        assert_eq!(replicas["maximum"].as_f64(), Some(5.0), "{replicas}");
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(json["components"]["schemas"]["InstanceDetail"].is_object());
        // The error shape keeps its name, now that it is common's ErrorBody.
        assert!(json["components"]["schemas"]["ErrorResponse"]["properties"]["error"].is_object());
        assert!(
            json["components"]["schemas"]["ErrorResponseDetail"]["properties"]["code"].is_object()
        );
        assert_eq!(
            json["paths"]["/v1/instances"]["post"]["responses"]["400"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorResponse"
        );
    }
}
