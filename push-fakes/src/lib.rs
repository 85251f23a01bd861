//! Local fakes of the push providers, speaking their real wire protocols, for
//! firmcast's tests and benchmarks.
//!
//! - [`ApnsFake`]: APNs' provider API, HTTP/2 over TLS (ALPN `h2`, a
//!   certificate for `127.0.0.1`/`localhost` from a throw-away [`TestCa`]),
//!   ES256 provider-token verification, APNs' status codes and `reason`s.
//! - [`FcmFake`]: the FCM HTTP v1 `messages:send` endpoint and the OAuth2
//!   token endpoint (JWT-bearer grant, RS256) a service account's `token_uri`
//!   points at, over plain HTTP.
//!
//! Both count what they received and inject scripted faults per device
//! token. Each fake generates its own keys; write them out with
//! [`ApnsFake::write_key`] / [`ApnsFake::write_ca`] /
//! [`FcmFake::write_service_account`] and point the client at
//! [`ApnsFake::base_url`] / [`FcmFake::base_url`].

#![forbid(unsafe_code)]

pub mod apns;
pub mod fcm;
mod jwt;
mod server;
mod tls;
mod util;

pub use apns::{ApnsDelivery, ApnsFake, ApnsFault, ApnsKey, ApnsOptions};
pub use fcm::{FcmDelivery, FcmFake, FcmFault, FcmOptions, ServiceAccountKey};
pub use tls::TestCa;
