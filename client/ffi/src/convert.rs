//! Conversions between the core's types and the exported ones: field by
//! field, no logic.

use crate::types::*;
use firmcast_client as core;

impl From<core::Error> for ClientError {
    fn from(e: core::Error) -> Self {
        let message = e.to_string();
        match e {
            core::Error::Server {
                status,
                code,
                retry_after,
                ..
            } => ClientError::Server {
                status,
                code,
                message,
                retry_after_seconds: retry_after,
            },
            core::Error::Refused { status, code, .. } => ClientError::Refused {
                status,
                code,
                message,
            },
            e => match e.kind().into() {
                ErrorKind::InvalidInput => ClientError::InvalidInput { message },
                ErrorKind::Stale => ClientError::Stale { message },
                ErrorKind::Rollback => ClientError::Rollback { message },
                ErrorKind::BadSignature => ClientError::BadSignature { message },
                ErrorKind::UntrustedKeyset => ClientError::UntrustedKeyset { message },
                ErrorKind::KeysetExpired => ClientError::KeysetExpired { message },
                ErrorKind::Mismatch => ClientError::Mismatch { message },
                ErrorKind::DigestMismatch => ClientError::DigestMismatch { message },
                ErrorKind::TooLarge => ClientError::TooLarge { message },
                ErrorKind::Interrupted => ClientError::Interrupted { message },
                ErrorKind::Unreachable => ClientError::Unreachable { message },
                ErrorKind::Storage => ClientError::Storage { message },
                ErrorKind::Malformed => ClientError::Malformed { message },
                ErrorKind::CorruptState => ClientError::CorruptState { message },
                ErrorKind::Usage | ErrorKind::Server | ErrorKind::Refused => {
                    ClientError::Usage { message }
                }
            },
        }
    }
}

impl From<core::ErrorKind> for ErrorKind {
    fn from(k: core::ErrorKind) -> Self {
        use core::ErrorKind as K;
        match k {
            K::InvalidInput => ErrorKind::InvalidInput,
            K::Stale => ErrorKind::Stale,
            K::Rollback => ErrorKind::Rollback,
            K::BadSignature => ErrorKind::BadSignature,
            K::UntrustedKeyset => ErrorKind::UntrustedKeyset,
            K::KeysetExpired => ErrorKind::KeysetExpired,
            K::Mismatch => ErrorKind::Mismatch,
            K::DigestMismatch => ErrorKind::DigestMismatch,
            K::TooLarge => ErrorKind::TooLarge,
            K::Interrupted => ErrorKind::Interrupted,
            K::Server => ErrorKind::Server,
            K::Refused => ErrorKind::Refused,
            K::Unreachable => ErrorKind::Unreachable,
            K::Storage => ErrorKind::Storage,
            K::Malformed => ErrorKind::Malformed,
            K::CorruptState => ErrorKind::CorruptState,
            K::Usage => ErrorKind::Usage,
        }
    }
}

impl From<core::http::Request> for HttpRequest {
    fn from(r: core::http::Request) -> Self {
        HttpRequest {
            method: r.method.as_str().to_owned(),
            url: r.url,
            headers: r.headers.into_iter().collect(),
            body: r.body,
        }
    }
}

impl From<HttpResponse> for core::http::Response {
    fn from(r: HttpResponse) -> Self {
        core::http::Response::new(r.status, r.headers.into_iter().collect(), r.body)
    }
}

impl From<CheckItem> for core::CheckItem {
    fn from(i: CheckItem) -> Self {
        core::CheckItem {
            product: i.product,
            version: i.version,
            channel: i.channel,
        }
    }
}

impl From<core::Update> for Update {
    fn from(u: core::Update) -> Self {
        Update {
            product: u.product,
            version: u.version,
            installed: u.installed,
            channel: u.channel,
            seq: u.seq,
            sha256: u.sha256,
            size: u.size,
            url: u.url,
            critical: u.critical,
            notes: u.notes.into_iter().collect(),
        }
    }
}

impl From<Update> for core::Update {
    fn from(u: Update) -> Self {
        core::Update {
            product: u.product,
            version: u.version,
            installed: u.installed,
            channel: u.channel,
            seq: u.seq,
            sha256: u.sha256,
            size: u.size,
            url: u.url,
            critical: u.critical,
            notes: u.notes.into_iter().collect(),
        }
    }
}

impl From<core::CheckOutcome> for CheckResult {
    fn from(o: core::CheckOutcome) -> Self {
        let items = o
            .results
            .into_iter()
            .map(|r| ItemResult {
                product: r.product,
                installed: r.installed,
                channel: r.channel,
                outcome: match r.outcome {
                    Ok(None) => ItemOutcome::UpToDate,
                    Ok(Some(u)) => ItemOutcome::UpdateAvailable { update: u.into() },
                    Err(e) => ItemOutcome::Failed {
                        kind: e.kind().into(),
                        message: e.to_string(),
                    },
                },
                latest_seq: r.latest_seq,
            })
            .collect();
        CheckResult {
            items,
            state: o.state.to_json(),
            day: o.day,
        }
    }
}

impl From<core::Body> for BodyAction {
    fn from(b: core::Body) -> Self {
        match b {
            core::Body::Append => BodyAction::Append,
            core::Body::Restart => BodyAction::Restart,
            core::Body::Skip => BodyAction::Skip,
        }
    }
}

impl From<core::Verified> for VerifiedArtifact {
    fn from(v: core::Verified) -> Self {
        VerifiedArtifact {
            sha256: v.sha256,
            size: v.size,
        }
    }
}

impl From<Stage> for core::Stage {
    fn from(s: Stage) -> Self {
        match s {
            Stage::Download => core::Stage::Download,
            Stage::Verify => core::Stage::Verify,
            Stage::Transfer => core::Stage::Transfer,
            Stage::Install => core::Stage::Install,
            Stage::Boot => core::Stage::Boot,
        }
    }
}

impl From<core::Stage> for Stage {
    fn from(s: core::Stage) -> Self {
        match s {
            core::Stage::Download => Stage::Download,
            core::Stage::Verify => Stage::Verify,
            core::Stage::Transfer => Stage::Transfer,
            core::Stage::Install => Stage::Install,
            core::Stage::Boot => Stage::Boot,
        }
    }
}

impl From<core::Report> for Report {
    fn from(r: core::Report) -> Self {
        Report {
            product: r.product,
            from_version: r.from,
            to_version: r.to,
            outcome: match r.outcome {
                core::Outcome::Installed => ReportOutcome::Installed,
                core::Outcome::Failed { stage, code } => ReportOutcome::Failed {
                    stage: stage.into(),
                    code,
                },
            },
        }
    }
}

impl From<Report> for core::Report {
    fn from(r: Report) -> Self {
        core::Report {
            product: r.product,
            from: r.from_version,
            to: r.to_version,
            outcome: match r.outcome {
                ReportOutcome::Installed => core::Outcome::Installed,
                ReportOutcome::Failed { stage, code } => core::Outcome::Failed {
                    stage: stage.into(),
                    code,
                },
            },
        }
    }
}
