//! What `toygres ha` and `toygres ro` share: an instance's settings document
//! (`/v1/instances/{name}/{document}`), shown whole, or changed by a patch naming only the fields
//! given, and printed as JSON or as a table.

use serde::{de::DeserializeOwned, Serialize};

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;

/// Reads `document` of instance `name`, or, given a patch, changes the fields it names and
/// returns the whole document after the change. An empty patch is refused before anything is
/// sent.
pub(super) async fn show_or_set<S, P>(
    client: &ClientArgs,
    name: &str,
    document: &str,
    patch: Option<P>,
) -> anyhow::Result<S>
where
    S: DeserializeOwned,
    P: Serialize + Default + PartialEq,
{
    let client = ControllerClient::from_args(client, std::env::var_os("HOME"))?;
    let path = format!("/v1/instances/{name}/{document}");
    match patch {
        None => Ok(client.get(&path).await?),
        Some(patch) => {
            if patch == P::default() {
                anyhow::bail!("nothing to change: give at least one setting (see --help)");
            }
            Ok(client.put(&path, &patch).await?)
        }
    }
}

/// Prints a settings document as JSON, or as the table `render` makes of it.
pub(super) fn print<S: Serialize>(
    settings: &S,
    output: OutputFormat,
    render: impl Fn(&S) -> String,
) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(settings)?),
        OutputFormat::Table => print!("{}", render(settings)),
    }
    Ok(())
}
