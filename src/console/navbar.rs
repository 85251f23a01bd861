//! The bar every page shares: the pages, who is signed in with which role,
//! and "Sign out"; plus the asset URLs the layout links.

use super::assets;
use super::session::Session;

pub struct Nav {
    /// The signed-in token's name; `None` on the sign-in page.
    pub actor: Option<String>,
    pub role: &'static str,
    /// For the sign-out form.
    pub csrf: String,
    /// The page shown (`products`, `publish`, `jobs`, `audit`, `keys`).
    pub current: &'static str,
    pub css: &'static str,
    pub js: &'static str,
    pub htmx: &'static str,
    pub htmx_licence: &'static str,
}

impl Nav {
    pub fn signed_out() -> Self {
        Nav {
            actor: None,
            role: "",
            csrf: String::new(),
            current: "",
            css: assets::url("console.css"),
            js: assets::url("console.js"),
            htmx: assets::url("htmx-2.0.11.min.js"),
            htmx_licence: assets::url("htmx-LICENSE.txt"),
        }
    }

    pub fn signed_in(session: &Session, current: &'static str) -> Self {
        Nav {
            actor: Some(session.actor.clone()),
            role: crate::api::auth::role_name(session.role),
            csrf: session.csrf.clone(),
            current,
            ..Nav::signed_out()
        }
    }

    /// `aria-current="page"` on the link to the page shown.
    pub fn is(&self, page: &str) -> bool {
        self.current == page
    }
}
