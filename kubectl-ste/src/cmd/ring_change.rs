//! `kubectl ste ring join` and `ring leave`.
//!
//! Both print the move plan (the router's PLANNED message) first. `leave`
//! asks for confirmation on a terminal unless `--yes`, and refuses without
//! `--yes` when stdin is not a terminal. Like `kubectl drain` and `kubectl
//! delete`, they wait by default: the command follows the move to DONE,
//! drawing progress on stderr, bounded by `--timeout` if given. With
//! `--wait=false` it returns once the router has accepted the change and
//! started the move (which runs on in the router).

use std::time::{Duration, Instant};

use serde::Serialize;
use ste_proto::v1::{JoinRequest, LeaveRequest, MigrationPhase, MigrationProgress};
use tonic::Streaming;

use super::migration::{MigrationFacts, ProgressView, key_amount, plan_line, plan_table};
use crate::cli::{JoinArgs, LeaveArgs, WaitArgs};
use crate::connect::RouterConn;
use crate::error::{CliError, CliResult};
use crate::session::{Session, parse_timeout};

/// What `-o json|yaml` prints for a join or leave.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeReport {
    /// `join` or `leave`.
    pub kind: String,
    /// The member.
    pub member: String,
    /// Only planned.
    pub dry_run: bool,
    /// The router's plan.
    pub plan: MigrationFacts,
    /// The last progress seen when waiting: phase DONE on success.
    pub result: Option<MigrationFacts>,
    /// Seconds from the plan to DONE, when waited for.
    pub seconds: Option<f64>,
}

enum Kind {
    Join,
    Leave,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Leave => "leave",
        }
    }
}

/// The first message must be the plan; it is awaited within the request
/// timeout (the router checks the new shard before planning).
async fn plan(
    router: &RouterConn,
    stream: &mut Streaming<MigrationProgress>,
    kind: &Kind,
    node: &str,
) -> CliResult<MigrationProgress> {
    let first = router.next_progress(stream, router.timeout()).await?;
    match first {
        Some(p) if p.phase == MigrationPhase::Planned as i32 => Ok(p),
        Some(p) if p.phase == MigrationPhase::Done as i32 => Ok(p),
        Some(p) => Err(CliError::msg(format!(
            "unexpected first message from the router for {} {node}: phase {}",
            kind.name(),
            p.phase
        ))),
        None => Err(CliError::msg(format!(
            "the router ended the {} of {node} without a plan",
            kind.name()
        ))),
    }
}

fn print_plan(session: &mut Session, plan: &MigrationFacts, dry_run: bool) {
    if session.format.is_document() {
        return;
    }
    session.term.out_line(&plan_line(plan, dry_run));
    if !plan.flows.is_empty() {
        let table = plan_table(plan).render(session.headers, session.term.out_color);
        session.term.out(&table);
    }
}

/// Follows the stream to DONE within `limit`, showing progress.
async fn follow(
    session: &mut Session,
    router: &RouterConn,
    stream: &mut Streaming<MigrationProgress>,
    mut last: MigrationProgress,
    limit: Option<Duration>,
) -> CliResult<MigrationProgress> {
    let deadline = limit.map(|l| Instant::now() + l);
    let mut view = ProgressView::new(&session.term);
    while last.phase != MigrationPhase::Done as i32 {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let next = router.next_progress(stream, left).await;
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                view.finish(&mut session.term);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(CliError::msg(format!(
                        "timed out after {} waiting for the {} of {} ({} of {} keys moved); the \
                         move continues in the router: follow it with `kubectl ste status`",
                        humantime::format_duration(limit.unwrap_or_default()),
                        last.kind,
                        last.member,
                        last.keys_moved,
                        last.keys_total
                    )));
                }
                return Err(e);
            }
        };
        match next {
            Some(p) => {
                if p.phase == MigrationPhase::Moving as i32 {
                    view.update(&mut session.term, &p);
                }
                last = p;
            }
            None => {
                view.finish(&mut session.term);
                return Err(CliError::msg(format!(
                    "the router ended the {} of {} before it was done ({} of {} keys moved): see \
                     `kubectl ste status`",
                    last.kind, last.member, last.keys_moved, last.keys_total
                )));
            }
        }
    }
    view.update(&mut session.term, &last);
    view.finish(&mut session.term);
    Ok(last)
}

/// Whether to wait, and for how long at most (`None`: until done).
fn wait_limit(args: &WaitArgs) -> CliResult<(bool, Option<Duration>)> {
    match &args.timeout {
        Some(_) if !args.wait => Err(CliError::msg(
            "--timeout bounds the wait: it cannot be combined with --wait=false",
        )),
        Some(t) => Ok((true, parse_timeout(t)?)),
        None => Ok((args.wait, None)),
    }
}

/// Which change, and how to show it.
struct Change<'a> {
    kind: Kind,
    node: &'a str,
    args: &'a WaitArgs,
    /// False when the plan was already shown (before a confirmation).
    show_plan: bool,
}

/// After the plan: follow or not, then print the outcome.
async fn finish(
    session: &mut Session,
    router: &RouterConn,
    change: Change<'_>,
    mut stream: Streaming<MigrationProgress>,
    planned: MigrationProgress,
) -> CliResult<()> {
    let Change {
        kind,
        node,
        args,
        show_plan,
    } = change;
    let (wait, limit) = wait_limit(args)?;
    let plan = MigrationFacts::from(&planned);
    if show_plan {
        print_plan(session, &plan, args.dry_run);
    }
    let mut report = ChangeReport {
        kind: kind.name().into(),
        member: node.into(),
        dry_run: args.dry_run,
        plan: plan.clone(),
        result: None,
        seconds: None,
    };
    if args.dry_run {
        if session.format.is_document() {
            session.print_document(&report)?;
        }
        return Ok(());
    }
    // A change with no keys to move is over at once: its outcome is shown
    // even with --wait=false.
    if !wait && planned.phase != MigrationPhase::Done as i32 && planned.keys_total > 0 {
        if session.format.is_document() {
            session.print_document(&report)?;
        } else {
            session.term.out_line(&format!(
                "{} of {node} started (--wait=false): the router moves the keys now; \
                 follow it with `kubectl ste status`",
                kind.name()
            ));
        }
        return Ok(());
    }
    let started = Instant::now();
    let done = follow(session, router, &mut stream, planned, limit).await?;
    let seconds = started.elapsed().as_secs_f64();
    let done_facts = MigrationFacts::from(&done);
    if session.format.is_document() {
        report.result = Some(done_facts);
        report.seconds = Some(seconds);
        session.print_document(&report)?;
    } else {
        let verb = match kind {
            Kind::Join => "joined",
            Kind::Leave => "left",
        };
        let moved = if done.keys_moved == 0 {
            "no keys moved".to_string()
        } else {
            format!(
                "{} moved in {seconds:.1}s",
                key_amount(done.keys_moved, done.bytes_moved)
            )
        };
        session.term.out_line(&format!(
            "{node} {verb} the ring: generation {}, {moved}",
            done.to_generation
        ));
        if matches!(kind, Kind::Leave) {
            session.term.out_line(&format!(
                "{node} stays out of the ring, also when the router or its agent restarts, \
                 until `kubectl ste ring join {node}`"
            ));
        }
    }
    Ok(())
}

/// Runs `ring join`.
pub async fn join(session: &mut Session, args: &JoinArgs) -> CliResult<()> {
    wait_limit(&args.wait)?;
    let router = session.router().await?;
    let request = JoinRequest {
        name: args.node.clone(),
        weight: args.weight.unwrap_or(0),
        dry_run: args.wait.dry_run,
        endpoint: args.endpoint.clone().unwrap_or_default(),
    };
    let mut stream = router.join(request).await?;
    let planned = plan(&router, &mut stream, &Kind::Join, &args.node).await?;
    let change = Change {
        kind: Kind::Join,
        node: &args.node,
        args: &args.wait,
        show_plan: true,
    };
    finish(session, &router, change, stream, planned).await
}

/// Asks on the terminal; `Ok(false)` when the answer is not yes.
async fn confirm(session: &mut Session, question: &str) -> CliResult<bool> {
    session.term.err(&format!("{question} [y/N]: "));
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| CliError::msg(e.to_string()))?
    .map_err(|e| CliError::msg(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs `ring leave`: plan (dry run), confirm, then the real change.
pub async fn leave(session: &mut Session, args: &LeaveArgs) -> CliResult<()> {
    wait_limit(&args.wait)?;
    let node = &args.node;
    let router = session.router().await?;
    if !args.wait.dry_run && !args.yes && !session.term.in_tty {
        // A request the router would refuse anyway (not a member, the last
        // one) says so first, rather than ask for a confirmation.
        let mut preview = router
            .leave(LeaveRequest {
                name: node.clone(),
                dry_run: true,
                drain: false,
            })
            .await?;
        plan(&router, &mut preview, &Kind::Leave, node).await?;
        return Err(CliError::msg(format!(
            "refusing to remove {node} from the ring without confirmation: stdin is not a \
             terminal; pass --yes to confirm (or --dry-run to see the plan)"
        )));
    }
    if args.wait.dry_run || args.yes {
        let mut stream = router
            .leave(LeaveRequest {
                name: node.clone(),
                dry_run: args.wait.dry_run,
                drain: false,
            })
            .await?;
        let planned = plan(&router, &mut stream, &Kind::Leave, node).await?;
        let change = Change {
            kind: Kind::Leave,
            node,
            args: &args.wait,
            show_plan: true,
        };
        return finish(session, &router, change, stream, planned).await;
    }
    // Interactive: show the plan, ask, then leave for real.
    let mut preview = router
        .leave(LeaveRequest {
            name: node.clone(),
            dry_run: true,
            drain: false,
        })
        .await?;
    let planned = MigrationFacts::from(&plan(&router, &mut preview, &Kind::Leave, node).await?);
    print_plan(session, &planned, false);
    let question = if planned.keys_total == 0 {
        format!("Remove {node} from the ring (it holds no keys)?")
    } else {
        format!(
            "Remove {node} from the ring and move its {} to the other members?",
            key_amount(planned.keys_total, planned.bytes_total)
        )
    };
    if !confirm(session, &question).await? {
        return Err(CliError::msg(format!("leave of {node} cancelled")));
    }
    let mut stream = router
        .leave(LeaveRequest {
            name: node.clone(),
            dry_run: false,
            drain: false,
        })
        .await?;
    let planned = plan(&router, &mut stream, &Kind::Leave, node).await?;
    // The plan was shown before the question.
    let change = Change {
        kind: Kind::Leave,
        node,
        args: &args.wait,
        show_plan: false,
    };
    finish(session, &router, change, stream, planned).await
}
