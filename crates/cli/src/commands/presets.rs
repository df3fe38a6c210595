//! `reelay presets`: the named output presets the server offers.

use super::{context, emit, emit_json};
use crate::client::Client;
use crate::format::{self, clean};
use clap::Args;
use reelay_protocol::PresetList;

#[derive(Debug, Clone, Args)]
pub struct PresetsArgs {
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &Client, args: &PresetsArgs) -> anyhow::Result<()> {
    let list = client
        .presets()
        .await
        .map_err(|e| context(e, "cannot list presets"))?;
    if args.json {
        return emit_json(&list);
    }
    emit(render(&list).trim_end())?;
    Ok(())
}

pub fn render(list: &PresetList) -> String {
    if list.presets.is_empty() {
        return "no presets".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .presets
        .iter()
        .map(|p| vec![clean(&p.name), clean(&p.container), clean(&p.description)])
        .collect();
    format::table(&["NAME", "CONTAINER", "DESCRIPTION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_protocol::PresetInfo;

    #[test]
    fn renders_a_table() {
        let list = PresetList {
            presets: vec![
                PresetInfo {
                    name: "mp4-720p".into(),
                    description: "H.264/AAC 720p".into(),
                    container: "mp4".into(),
                },
                PresetInfo {
                    name: "hls-abr".into(),
                    description: "adaptive HLS ladder".into(),
                    container: "hls".into(),
                },
            ],
        };
        assert_eq!(
            render(&list),
            "NAME      CONTAINER  DESCRIPTION\n\
             mp4-720p  mp4        H.264/AAC 720p\n\
             hls-abr   hls        adaptive HLS ladder\n"
        );
        assert_eq!(render(&PresetList { presets: vec![] }), "no presets");
    }
}
