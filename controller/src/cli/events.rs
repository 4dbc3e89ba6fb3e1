//! `toygres events NAME`: what happened to an instance, oldest first — operations, failovers,
//! members' reports, fencing — and, with `--follow`, what happens next as it happens.

use std::time::Duration;

use toygres_common::controller_api::{Event, EventList};

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;

/// How often `--follow` asks for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The flags of `toygres events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    pub name: String,
    /// Show at most this many of the newest events (1 to 1000)
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only the events after this event id
    #[arg(long, value_name = "ID")]
    pub since: Option<i64>,
    /// Keep printing new events until interrupted
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format (json: one event per line with --follow)
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let name = &args.name;
    let mut since = args.since;
    let first = fetch(&client, name, args.limit, since).await?;
    if args.output == OutputFormat::Json && !args.follow {
        println!("{}", serde_json::to_string_pretty(&first)?);
        return Ok(());
    }
    let mut batch = first.events;
    loop {
        for event in &batch {
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string(event)?),
                OutputFormat::Table => println!("{}", render(event)),
            }
        }
        since = batch.last().map(|e| e.id).or(since);
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
        // Asked with `since`, the page is the events right after it.
        batch = fetch(&client, name, 1000, since).await?.events;
    }
}

async fn fetch(
    client: &ControllerClient,
    name: &str,
    limit: u32,
    since: Option<i64>,
) -> anyhow::Result<EventList> {
    let mut path = format!("/v1/instances/{name}/events?limit={limit}");
    if let Some(id) = since {
        path.push_str(&format!("&since={id}"));
    }
    Ok(client.get(&path).await?)
}

/// One event as a line: when, its id, kind, member and message.
pub fn render(event: &Event) -> String {
    format!(
        "{}  #{:<6} {:<22} {:<16} {}",
        event.at,
        event.id,
        event.kind,
        event.member.as_deref().unwrap_or("-"),
        event.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_one_line_with_a_dash_for_no_member() {
        let event = Event {
            id: 42,
            at: "2026-12-04T22:00:00Z".into(),
            kind: "failover".into(),
            member: None,
            operation_id: Some("op-1".into()),
            message: "demo-1 promoted".into(),
        };
        let line = render(&event);
        assert!(line.starts_with("2026-12-04T22:00:00Z  #42"), "{line}");
        assert!(line.contains(" failover "), "{line}");
        assert!(line.contains(" - "), "{line}");
        assert!(line.ends_with("demo-1 promoted"), "{line}");
    }
}
