//! The mix-up breaker. Sandbox APNs tokens sent to production (or the
//! reverse) all answer `BadDeviceToken`, and tokens of another Firebase
//! project all answer `SENDER_ID_MISMATCH`: each is a dead-token answer,
//! and deleting on each would wipe every subscriber over one config
//! mistake. So a job's first answers from a provider (up to [`WINDOW`], or
//! all of the batch's if fewer) are judged before any such token is
//! deleted: mostly those codes, and the job stops as failed with the
//! likely mistake in words, deleting none; otherwise the held tokens are
//! deleted and the rest of the job deletes at once (the job records the
//! provider as checked).

use super::store::ProviderKind;
use std::collections::HashMap;
use std::sync::Mutex;

/// Answers judged per provider before a suspect token is deleted.
pub const WINDOW: usize = 20;

/// What to do with one answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As usual: count it, delete a dead token.
    Deliver,
    /// A suspect dead token while the judgement is open: keep it for now.
    Hold,
    /// The window closed healthy: these held tokens (this one included,
    /// if suspect) may now be deleted.
    Healthy(Vec<String>),
    /// The window closed as a mix-up: stop the job; delete nothing. The
    /// `held` suspects (this one included) count as failed.
    Tripped { reason: String, held: usize },
    /// A suspect after the window closed as a mix-up: failed, kept.
    Kept,
}

struct Watch {
    window: usize,
    seen: usize,
    suspects: usize,
    held: Vec<String>,
    /// `Some(true)`: healthy; `Some(false)`: tripped.
    closed: Option<bool>,
}

pub struct Breaker {
    watches: Mutex<HashMap<ProviderKind, Watch>>,
}

impl Breaker {
    /// Watches each provider of `counts` (its subscribers in this batch)
    /// that the job has not checked yet.
    pub fn new(counts: &HashMap<ProviderKind, usize>, checked: &[ProviderKind]) -> Self {
        let watches = counts
            .iter()
            .filter(|(p, n)| **n > 0 && !checked.contains(p))
            .map(|(p, n)| {
                let watch = Watch {
                    window: (*n).min(WINDOW),
                    seen: 0,
                    suspects: 0,
                    held: vec![],
                    closed: None,
                };
                (*p, watch)
            })
            .collect();
        Breaker {
            watches: Mutex::new(watches),
        }
    }

    /// One answer from `provider` for `token`; `suspect` is the answer's
    /// code and the provider's words for the likely mistake, when it is a
    /// dead token of a mix-up kind.
    pub fn answer(
        &self,
        provider: ProviderKind,
        token: &str,
        suspect: Option<(&str, &str)>,
    ) -> Verdict {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = watches.get_mut(&provider) else {
            return Verdict::Deliver;
        };
        match (w.closed, suspect) {
            (Some(false), Some(_)) => return Verdict::Kept,
            (Some(_), _) => return Verdict::Deliver,
            (None, _) => {}
        }
        w.seen += 1;
        if suspect.is_some() {
            w.suspects += 1;
            w.held.push(token.to_owned());
        }
        if w.seen < w.window {
            return match suspect {
                Some(_) => Verdict::Hold,
                None => Verdict::Deliver,
            };
        }
        if w.suspects * 2 > w.window {
            w.closed = Some(false);
            let (code, hint) = suspect.unwrap_or(("dead-token", "likely a configuration mistake"));
            let reason = format!(
                "{}: {} of the first {} answers were {code}: {hint}",
                provider.label(),
                w.suspects,
                w.window
            );
            let held = std::mem::take(&mut w.held).len();
            return Verdict::Tripped { reason, held };
        }
        w.closed = Some(true);
        Verdict::Healthy(std::mem::take(&mut w.held))
    }

    /// Providers whose window closed healthy in this batch.
    pub fn passed(&self) -> Vec<ProviderKind> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let mut passed: Vec<_> = watches
            .iter()
            .filter(|(_, w)| w.closed == Some(true))
            .map(|(p, _)| *p)
            .collect();
        passed.sort();
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APNS: ProviderKind = ProviderKind::Apns;
    const BAD: Option<(&str, &str)> = Some(("BadDeviceToken", "sandbox?"));

    fn breaker(n: usize) -> Breaker {
        Breaker::new(&HashMap::from([(APNS, n)]), &[])
    }

    #[test]
    fn mostly_bad_tokens_trip_and_nothing_is_released() {
        let b = breaker(500);
        for i in 0..WINDOW - 1 {
            let suspect = if i % 4 == 0 { None } else { BAD };
            let want = if suspect.is_some() {
                Verdict::Hold
            } else {
                Verdict::Deliver
            };
            assert_eq!(b.answer(APNS, &format!("t{i}"), suspect), want);
        }
        match b.answer(APNS, "last", BAD) {
            Verdict::Tripped { reason, held } => {
                assert!(
                    reason.contains("15 of the first 20 answers were BadDeviceToken"),
                    "{reason}"
                );
                assert_eq!(held, 15);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.answer(APNS, "after", BAD), Verdict::Kept);
        assert_eq!(b.answer(APNS, "fine", None), Verdict::Deliver);
        assert!(b.passed().is_empty());
    }

    #[test]
    fn a_few_bad_tokens_are_released_when_the_window_closes_healthy() {
        let b = breaker(500);
        assert_eq!(b.answer(APNS, "bad1", BAD), Verdict::Hold);
        assert_eq!(b.answer(APNS, "bad2", BAD), Verdict::Hold);
        for i in 0..WINDOW - 3 {
            assert_eq!(b.answer(APNS, &format!("ok{i}"), None), Verdict::Deliver);
        }
        assert_eq!(
            b.answer(APNS, "ok-last", None),
            Verdict::Healthy(vec!["bad1".into(), "bad2".into()])
        );
        assert_eq!(b.answer(APNS, "bad3", BAD), Verdict::Deliver);
        assert_eq!(b.passed(), vec![APNS]);
    }

    #[test]
    fn a_small_batch_is_judged_whole_and_a_checked_job_not_at_all() {
        let b = breaker(3);
        assert_eq!(b.answer(APNS, "a", BAD), Verdict::Hold);
        assert_eq!(b.answer(APNS, "b", None), Verdict::Deliver);
        assert_eq!(
            b.answer(APNS, "c", None),
            Verdict::Healthy(vec!["a".into()])
        );
        let b = breaker(2);
        b.answer(APNS, "a", BAD);
        assert!(matches!(
            b.answer(APNS, "b", BAD),
            Verdict::Tripped { held: 2, .. }
        ));
        let checked = Breaker::new(&HashMap::from([(APNS, 500)]), &[APNS]);
        assert_eq!(checked.answer(APNS, "a", BAD), Verdict::Deliver);
    }

    #[test]
    fn exactly_half_bad_is_not_most() {
        let b = breaker(500);
        for i in 0..WINDOW / 2 {
            assert_eq!(b.answer(APNS, &format!("bad{i}"), BAD), Verdict::Hold);
        }
        for i in 0..WINDOW / 2 - 1 {
            assert_eq!(b.answer(APNS, &format!("ok{i}"), None), Verdict::Deliver);
        }
        match b.answer(APNS, "ok-last", None) {
            Verdict::Healthy(held) => assert_eq!(held.len(), WINDOW / 2),
            other => panic!("half of the window tripped the breaker: {other:?}"),
        }
    }
}
