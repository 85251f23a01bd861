//! The products page: every product with its channels, the release live
//! in each (rollout, state, ramp progress) and its adoption over 30 days;
//! and one product's page with all its releases.

use super::super::chart::{self, Chart};
use super::super::format::{self, State};
use super::super::{errors, render, Ctx, Response};
use crate::catalog::ProductCatalog;
use crate::console::navbar::Nav;
use crate::error::ApiError;
use crate::rollout::day;
use askama::Template;
use hyper::StatusCode;
use std::sync::Arc;

/// Days the chart covers.
pub const CHART_DAYS: u32 = 30;

pub struct ChannelRow {
    pub channel: String,
    /// The newest release of the channel that is not yanked.
    pub version: Option<String>,
    pub href: String,
    pub rollout: String,
    pub state: Option<State>,
    pub ramp: Option<RampProgress>,
    /// Yanked releases newer than the one shown.
    pub yanked_newer: usize,
}

pub struct RampProgress {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    pub text: String,
}

impl RampProgress {
    pub fn of(r: &crate::state::Ramp, held: bool) -> Self {
        let now = format::pct(r.current_bp());
        let text = if r.done() {
            format!("ramp done at {now}")
        } else {
            let next = format::pct(r.steps_bp[r.step + 1]);
            match (held, r.next_at) {
                (true, _) => format!("at {now}; held while paused (next step {next})"),
                (false, Some(at)) => format!(
                    "at {now}; {next} {} ({})",
                    format::relative(at),
                    format::time(at)
                ),
                (false, None) => format!("at {now}; next {next}"),
            }
        };
        RampProgress {
            step: r.step + 1,
            steps: r.steps_bp.len(),
            text,
        }
    }
}

pub struct ProductCard {
    pub name: String,
    pub href: String,
    pub releases: usize,
    pub channels: Vec<ChannelRow>,
    pub chart: Chart,
}

#[derive(Template)]
#[template(path = "products.html")]
struct Products {
    nav: Nav,
    products: Vec<ProductCard>,
    days: u32,
}

pub struct ReleaseRow {
    pub version: String,
    pub href: String,
    pub channel: String,
    pub seq: u64,
    pub rollout: String,
    pub state: State,
    pub published: String,
}

#[derive(Template)]
#[template(path = "product.html")]
struct Product {
    nav: Nav,
    card: ProductCard,
    releases: Vec<ReleaseRow>,
    days: u32,
}

fn channels(p: &ProductCatalog) -> Vec<ChannelRow> {
    let mut names: Vec<&str> = p
        .releases()
        .iter()
        .map(|r| r.stored.channel.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|channel| {
            // Newest first already.
            let in_channel = p.releases().iter().filter(|r| r.stored.channel == channel);
            let yanked_newer = in_channel.clone().take_while(|r| r.stored.yanked).count();
            match in_channel.clone().find(|r| !r.stored.yanked) {
                Some(r) => {
                    let s = &r.stored;
                    ChannelRow {
                        channel: channel.to_owned(),
                        version: Some(s.version.clone()),
                        href: release_href(&s.product, &s.version),
                        rollout: format::pct(s.rollout_bp),
                        state: Some(format::state(s)),
                        ramp: s
                            .steering
                            .ramp
                            .as_ref()
                            .map(|ramp| RampProgress::of(ramp, s.paused)),
                        yanked_newer,
                    }
                }
                None => ChannelRow {
                    channel: channel.to_owned(),
                    version: None,
                    href: String::new(),
                    rollout: String::new(),
                    state: None,
                    ramp: None,
                    yanked_newer,
                },
            }
        })
        .collect()
}

pub fn release_href(product: &str, version: &str) -> String {
    format!("/console/releases/{product}/{version}")
}

/// The dates of the chart's window, oldest first.
fn window(ctx: &Ctx<'_>) -> Vec<String> {
    let today = ctx.api.rollout.today();
    let first = today.saturating_sub(CHART_DAYS - 1);
    (first..=today).map(day::date).collect()
}

async fn card(
    ctx: &Ctx<'_>,
    p: &Arc<ProductCatalog>,
    name: &str,
    dates: &[String],
) -> Result<ProductCard, ApiError> {
    let days = crate::api::stats::adoption(ctx.api, name, CHART_DAYS, None).await?;
    Ok(ProductCard {
        name: name.to_owned(),
        href: format!("/console/products/{name}"),
        releases: p.releases().len(),
        channels: channels(p),
        chart: chart::draw(
            &format!("Active installs of {name} by version, last {CHART_DAYS} days"),
            dates,
            &days,
        ),
    })
}

/// `GET /console/products`.
pub async fn index(ctx: &Ctx<'_>) -> Response {
    let snap = ctx.api.catalog.load_full();
    let mut names: Vec<(&String, &Arc<ProductCatalog>)> = snap.products.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    let dates = window(ctx);
    let mut products = Vec::with_capacity(names.len());
    for (name, p) in names {
        match card(ctx, p, name, &dates).await {
            Ok(c) => products.push(c),
            Err(e) => return errors::page(Some(ctx.nav("products")), &e),
        }
    }
    render(
        StatusCode::OK,
        &Products {
            nav: ctx.nav("products"),
            products,
            days: CHART_DAYS,
        },
    )
}

/// `GET /console/products/{product}`.
pub async fn product(ctx: &Ctx<'_>, name: &str) -> Response {
    let snap = ctx.api.catalog.load_full();
    let Some(p) = snap.products.get(name) else {
        return errors::page(
            Some(ctx.nav("products")),
            &ApiError::not_found(
                "unknown_product",
                format!("no product {name:?} has releases; pick one from Products"),
            ),
        );
    };
    let dates = window(ctx);
    let card = match card(ctx, p, name, &dates).await {
        Ok(c) => c,
        Err(e) => return errors::page(Some(ctx.nav("products")), &e),
    };
    let releases = p
        .releases()
        .iter()
        .map(|r| {
            let s = &r.stored;
            ReleaseRow {
                version: s.version.clone(),
                href: release_href(&s.product, &s.version),
                channel: s.channel.clone(),
                seq: s.seq,
                rollout: format::pct(s.rollout_bp),
                state: format::state(s),
                published: format::time(s.published_at),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &Product {
            nav: ctx.nav("products"),
            card,
            releases,
            days: CHART_DAYS,
        },
    )
}
