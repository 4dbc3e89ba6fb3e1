//! `toygres operation get|wait|cancel ID`, and the wait-with-progress every long command shares.

use std::io::Write as _;
use std::time::{Duration, Instant};

use toygres_common::controller_api::Operation;
use toygres_common::domain::OperationStatus;

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;

/// How often a wait asks for the operation's status: short beside the operations people wait
/// for (a restore of a small instance ends in about 2 s; at 250 ms, 0.125 s of it on average was
/// this poll's lag), and one cheap read for the controller.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The flags of `toygres operation`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperationArgs {
    #[command(subcommand)]
    pub command: OperationCommand,
}

/// The subcommands of `toygres operation`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperationCommand {
    /// Show an operation's status and progress
    Get(OperationIdArgs),
    /// Wait until an operation ends, showing its progress
    Wait(OperationIdArgs),
    /// Cancel an operation: a queued one at once, a running one at its next safe point
    Cancel(OperationIdArgs),
}

/// An operation id and the common flags.
#[derive(Debug, Clone, clap::Args)]
pub struct OperationIdArgs {
    /// The operation id (`op-…`), as `toygres create` or `delete` printed it
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres operation …`.
pub async fn run(args: OperationArgs) -> anyhow::Result<()> {
    match args.command {
        OperationCommand::Get(args) => {
            let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
            let operation: Operation = client.get(&format!("/v1/operations/{}", args.id)).await?;
            print_operation(&operation, args.output)
        }
        OperationCommand::Wait(args) => {
            let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
            let operation = wait(&client, &args.id, args.output == OutputFormat::Table).await?;
            print_operation(&operation, args.output)?;
            fail_unless_succeeded(&operation)
        }
        OperationCommand::Cancel(args) => {
            let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
            let operation: Operation = client
                .delete(&format!("/v1/operations/{}", args.id))
                .await?;
            print_operation(&operation, args.output)
        }
    }
}

fn print_operation(operation: &Operation, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(operation)?),
        OutputFormat::Table => print!("{}", render_operation(operation)),
    }
    Ok(())
}

/// An operation for people.
pub fn render_operation(operation: &Operation) -> String {
    let mut out = format!(
        "OPERATION  {}\nKIND       {}\nINSTANCE   {}\nSTATUS     {}\nELAPSED    {:.1} s\n",
        operation.id,
        operation.kind,
        operation.instance,
        operation.status,
        operation.elapsed_seconds
    );
    if let Some(progress) = &operation.progress {
        out.push_str(&format!(
            "PROGRESS   [{}/{}] {}\n",
            progress.step, progress.steps, progress.message
        ));
        if let Some(restore) = &progress.restore {
            out.push_str(&format!("RESTORE    {}\n", restore.line()));
        }
    }
    if let Some(error) = &operation.error {
        out.push_str(&format!("ERROR      {error}\n"));
    }
    out
}

/// An error when the operation did not succeed.
pub fn fail_unless_succeeded(operation: &Operation) -> anyhow::Result<()> {
    if OperationStatus::Succeeded == operation.status.as_str() {
        return Ok(());
    }
    anyhow::bail!(
        "operation {} {}: {}",
        operation.id,
        operation.status,
        operation.error.as_deref().unwrap_or("no error recorded")
    )
}

/// Polls the operation until it ends; with `show_progress`, prints each new progress step on
/// stderr.
pub async fn wait(
    client: &ControllerClient,
    id: &str,
    show_progress: bool,
) -> anyhow::Result<Operation> {
    let started = Instant::now();
    let mut last_message = String::new();
    // A restore's detail changes at every poll: shown when its phase changes, else every 5 s.
    let mut last_restore: Option<(String, Instant)> = None;
    loop {
        let operation: Operation = client.get(&format!("/v1/operations/{id}")).await?;
        if show_progress {
            if let Some(progress) = &operation.progress {
                let line = format!(
                    "[{}/{}] {}",
                    progress.step, progress.steps, progress.message
                );
                if line != last_message {
                    eprintln!("{:>6.1}s  {line}", started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                    last_message = line;
                }
                if let Some(restore) = &progress.restore {
                    let due = last_restore.as_ref().is_none_or(|(phase, at)| {
                        *phase != restore.phase || at.elapsed() >= Duration::from_secs(5)
                    });
                    if due {
                        eprintln!(
                            "{:>6.1}s        {}",
                            started.elapsed().as_secs_f64(),
                            restore.line()
                        );
                        last_restore = Some((restore.phase.clone(), Instant::now()));
                    }
                }
            }
        }
        if operation.is_finished() {
            return Ok(operation);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
