//! The scan agents' panel of the fleet page (issue 14): every agent the
//! coordinator has seen, live or gone since when, its last heartbeat,
//! labels, jobs done, rate and the job under way. Shown only when the store
//! has agents.

use maud::{Markup, html};

use palisade_core::monitor::Millis;

use super::fleet::count;
use super::layout::{Tone, tag, time};
use crate::store::AgentRow;

/// The panel, or nothing without agents.
pub fn panel(agents: &[AgentRow], now: Millis) -> Markup {
    let of = |state: &str| agents.iter().filter(|a| a.state(now) == state).count() as u64;
    let (live, silent, gone) = (of("live"), of("silent"), of("gone"));
    html! {
        @if !agents.is_empty() {
            section.agents aria-labelledby="agents-title" {
                h2 #agents-title { "Scan agents" }
                div.table-wrap {
                    table.cards #agents {
                        caption { (count(live, "agent", "agents")) " live, " (silent) " silent, " (gone) " gone"
                        }
                        thead {
                            tr {
                                th scope="col" { "Agent" }
                                th scope="col" { "State" }
                                th scope="col" { "Last heartbeat" }
                                th scope="col" { "Labels" }
                                th scope="col" class="num" { "Jobs done" }
                                th scope="col" class="num" { "Rate" }
                                th scope="col" { "Current job" }
                            }
                        }
                        tbody {
                            @for a in agents {
                                tr data-agent=(a.name) data-state=(a.state(now)) {
                                    td data-label="Agent" { strong { (a.name) } }
                                    td data-label="State" {
                                        @match (a.gone_at, a.state(now)) {
                                            (Some(at), _) => {
                                                (tag(Tone::Down, "gone")) " since " (time(now, at))
                                            }
                                            (None, "silent") => {
                                                (tag(Tone::Info, "silent")) " no heartbeat"
                                            }
                                            _ => { (tag(Tone::Ok, "live")) }
                                        }
                                    }
                                    td data-label="Last heartbeat" { (time(now, a.last_beat)) }
                                    td data-label="Labels" {
                                        @for (i, label) in a.labels.iter().enumerate() {
                                            @if i > 0 { " " }
                                            (tag(Tone::Quiet, label))
                                        }
                                    }
                                    td data-label="Jobs done" class="num" { (a.jobs_done) }
                                    td data-label="Rate" class="num" { (a.rate) " probes/s" }
                                    td data-label="Current job" {
                                        @match &a.job {
                                            Some(job) => { span.ports { (job) } }
                                            None => { span.none { "idle" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.hint {
                    "An agent is gone when its heartbeat (every 5 s) has not been renewed for "
                    "15 s, or it stopped. A gone agent takes no jobs; its row stays until it "
                    "comes back or the history is pruned."
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, gone_at: Option<Millis>, job: Option<&str>) -> AgentRow {
        AgentRow {
            name: name.into(),
            labels: vec!["any".into(), "site=fra1".into()],
            rate: 100_000,
            started: 1_000,
            last_beat: 50_000,
            jobs_done: 12,
            job: job.map(Into::into),
            gone_at,
        }
    }

    #[test]
    fn no_agents_no_panel() {
        assert_eq!(panel(&[], 60_000).into_string(), "");
    }

    #[test]
    fn live_and_gone_agents_are_told_apart() {
        let html = panel(
            &[
                agent("fra1-a", None, Some("1.0.2")),
                agent("fra1-b", Some(55_000), None),
            ],
            60_000,
        )
        .into_string();
        assert!(html.contains("1 agent live, 0 silent, 1 gone"), "{html}");
        assert!(
            html.contains(r#"<tr data-agent="fra1-a" data-state="live">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="tag tag-down">gone</span> since "#),
            "{html}"
        );
        assert!(html.contains("(10 s ago)"), "the heartbeat's age: {html}");
        assert!(html.contains("1.0.2") && html.contains("idle"), "{html}");
        assert!(html.contains("100000 probes/s"), "{html}");
    }
}
