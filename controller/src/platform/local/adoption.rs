//! What [`super::LocalPlatform::adopt`] reports.

/// What [`LocalPlatform::adopt`] did with one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Its sidecar still ran: adopted as it is.
    Adopted { pid: i32 },
    /// Its sidecar was gone: started again.
    Restarted { pid: i32 },
    /// Stopped on purpose ([`Platform::kill_member`]): left down.
    LeftStopped,
    /// Could not be started; the error says why.
    Failed { error: String },
}

/// What [`LocalPlatform::adopt`] found and did.
#[derive(Debug, Clone, Default)]
pub struct AdoptReport {
    /// `(instance, member, what happened)`, sorted by instance and member.
    pub members: Vec<(String, String, Adoption)>,
    /// Instances whose endpoints are served again.
    pub endpoints: Vec<String>,
    /// Instances whose endpoints could not be served, with the reason.
    pub failed_endpoints: Vec<(String, String)>,
}
