//! Anonymous install outcome reports, `POST /v1/reports` (DESIGN.md,
//! "Rollout intelligence"): product, from, to, installed or failed with the
//! stage and a short code. Nothing about the device is sent.

use crate::http::{status_error, Request, Response};
use crate::{Client, Error, Update};
use serde_json::json;

/// Where an install failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Download,
    Verify,
    Transfer,
    Install,
    Boot,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Verify => "verify",
            Stage::Transfer => "transfer",
            Stage::Install => "install",
            Stage::Boot => "boot",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    /// `code` matches `[A-Za-z0-9_.-]{1,32}`, e.g. `digest_mismatch`, `E42`.
    Failed {
        stage: Stage,
        code: String,
    },
}

impl Outcome {
    /// The `failed` outcome for a download or verification error, when the
    /// release is at fault: the bytes are not the signed ones (stage
    /// `verify`), or the server cannot serve them (stage `download`). A
    /// broken network, a busy server or a yanked release is not the
    /// release's failure and is not reported (it would trip health gates).
    pub fn for_download_error(e: &Error) -> Option<Outcome> {
        let stage = match e {
            Error::DigestMismatch(_) => Stage::Verify,
            Error::TooLarge(_) | Error::Mismatch(_) | Error::Malformed(_) => Stage::Download,
            Error::Refused { status, .. } if *status != 410 => Stage::Download,
            _ => return None,
        };
        Some(Outcome::Failed {
            stage,
            code: e.report_code(),
        })
    }
}

/// One report, for `update` (product, from = installed, to = version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub product: String,
    pub from: String,
    pub to: String,
    pub outcome: Outcome,
}

impl Report {
    pub fn new(update: &Update, outcome: Outcome) -> Self {
        Report {
            product: update.product.clone(),
            from: update.installed.clone(),
            to: update.version.clone(),
            outcome,
        }
    }

    /// The request to send; refuses a report the server would refuse.
    pub fn request(&self, client: &Client) -> Result<Request, Error> {
        let bad = |e: firmcast_signing::Error| Error::InvalidInput(format!("report: {e}"));
        firmcast_signing::names::validate_product(&self.product).map_err(bad)?;
        firmcast_signing::names::parse_version(&self.from).map_err(bad)?;
        firmcast_signing::names::parse_version(&self.to).map_err(bad)?;
        let mut body = json!({"product": self.product, "from": self.from, "to": self.to});
        match &self.outcome {
            Outcome::Installed => body["outcome"] = "installed".into(),
            Outcome::Failed { stage, code } => {
                let ok = (1..=32).contains(&code.len())
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
                if !ok {
                    return Err(Error::InvalidInput(format!(
                        "report code {:?} must be 1 to 32 of A-Z a-z 0-9 _ . -",
                        crate::http::one_line(code, 40)
                    )));
                }
                body["outcome"] = "failed".into();
                body["stage"] = stage.as_str().into();
                body["code"] = code.as_str().into();
            }
        }
        Ok(Request::post_json(client.base.join("v1/reports"), &body))
    }

    /// 202 is success; anything else is a typed error (a report is best
    /// effort: an app may drop it after `retry_later()` errors).
    pub fn receive(resp: &Response) -> Result<(), Error> {
        match resp.status {
            200..=299 => Ok(()),
            s => Err(status_error(s, &resp.headers, &resp.body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update() -> Update {
        Update {
            product: "P".into(),
            version: "2.2.0".into(),
            installed: "2.0.0".into(),
            channel: "stable".into(),
            seq: 1,
            sha256: "0".repeat(64),
            size: 1,
            url: "http://h/x".into(),
            critical: false,
            notes: Default::default(),
        }
    }

    #[test]
    fn reports_have_the_contract_shape() {
        let client = Client::new("http://h", &base64_root()).unwrap();
        let r = Report::new(&update(), Outcome::Installed)
            .request(&client)
            .unwrap();
        assert_eq!(r.url, "http://h/v1/reports");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"product":"P","from":"2.0.0","to":"2.2.0","outcome":"installed"})
        );

        let e = Error::DigestMismatch("x".into());
        let r = Report::new(&update(), Outcome::for_download_error(&e).unwrap());
        let v: serde_json::Value =
            serde_json::from_slice(&r.request(&client).unwrap().body).unwrap();
        assert_eq!(v["stage"], "verify");
        assert_eq!(v["code"], "digest_mismatch");
        assert_eq!(
            Outcome::for_download_error(&Error::Interrupted("x".into())),
            None
        );

        let bad = Report::new(
            &update(),
            Outcome::Failed {
                stage: Stage::Install,
                code: "no spaces".into(),
            },
        );
        assert!(matches!(bad.request(&client), Err(Error::InvalidInput(_))));
        assert!(Report::receive(&Response::new(202, vec![], vec![])).is_ok());
        let e = Report::receive(&Response::new(
            404,
            vec![],
            br#"{"error":"unknown_release","message":"m"}"#.to_vec(),
        ))
        .unwrap_err();
        assert!(matches!(e, Error::Refused { status: 404, .. }), "{e}");
    }

    fn base64_root() -> String {
        firmcast_signing::PrivateKey::generate()
            .public()
            .to_base64()
    }
}
