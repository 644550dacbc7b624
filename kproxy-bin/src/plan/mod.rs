//! `kproxy plan`: the service map a node would program, from Kubernetes objects in files.
//!
//! Problems with the input (unreadable files, bad documents, bad objects) go to stderr,
//! one line each as `kproxy: <file>: <problem>`; the map of the good objects is still
//! printed, and the exit status is then 2.

pub mod report;
pub mod table;

use std::fmt::Write as _;
use std::io::Write as _;

use clap::ValueEnum;
use std::process::ExitCode;

use kproxy_core::model::IpFamily;
use kproxy_core::{BuildOptions, KubeProxyConfiguration, NodeFacts, ServiceMap, Snapshot};
use serde::{Deserialize, Serialize};

use crate::cli::{InputArgs, OutputFormat, PlanArgs, PlanMode};
use crate::error::{Error, Result};
use crate::{backend, config, input, node};
use report::PlanReport;

/// What one backend would program in one IP family, when `--proxy-mode` names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendPlan {
    /// The proxy mode.
    pub mode: String,
    /// `IPv4` or `IPv6`.
    pub family: String,
    /// The backend's own rendering (iptables-restore input, IPVS services, ...).
    pub output: String,
}

/// The whole output document of the JSON and YAML formats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOutput {
    /// The service map.
    #[serde(flatten)]
    pub report: PlanReport,
    /// The backend's plan per IP family, with `--proxy-mode` other than `none`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub backend: Vec<BackendPlan>,
}

/// What `plan` and `trace` work on: the config, the node, the objects and their map.
pub struct Input {
    /// The config (file or defaults), with `--hostname-override` applied.
    pub cfg: KubeProxyConfiguration,
    /// The map options for the node.
    pub opts: BuildOptions,
    /// The objects read, and the problems met reading them.
    pub loaded: input::Loaded,
    /// The service map of the node.
    pub map: ServiceMap,
}

impl Input {
    /// Reads the config and the objects and builds the map; input problems are printed
    /// to stderr, one line each, and kept in `loaded.problems`.
    ///
    /// # Errors
    /// A bad config file or an unknown node name.
    pub fn load(args: &InputArgs) -> Result<Input> {
        let mut cfg = match &args.config {
            Some(path) => config::read_config_file(path)?.with_defaults(),
            None => KubeProxyConfiguration::default(),
        };
        if let Some(name) = &args.hostname_override {
            cfg.hostname_override = name.trim().to_owned();
        }
        cfg.validate()
            .map_err(|source| Error::config(args.config.clone(), source))?;
        let node_name = node::resolve(&cfg.hostname_override, node::host_name)?;
        let opts = BuildOptions::from_config(&cfg, &node_name);
        let loaded = input::load(&args.from);
        for problem in &loaded.problems {
            eprintln!("kproxy: {problem}");
        }
        let map = ServiceMap::build(&loaded.snapshot, &opts);
        Ok(Input {
            cfg,
            opts,
            loaded,
            map,
        })
    }

    /// The node's facts, from its Node object when the input has one.
    pub fn node_facts(&self) -> NodeFacts {
        NodeFacts::from_node(
            &self.opts.node_name,
            self.loaded.snapshot.node(&self.opts.node_name),
        )
    }
}

/// Runs `kproxy plan`.
///
/// # Errors
/// A bad config file or flag, an unknown node name, or an unavailable backend; these
/// stop before any output. Input problems do not: see the module docs.
pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    let printer = backend::plan_printer(args.proxy_mode)?;
    let Input {
        cfg,
        opts,
        loaded,
        map,
    } = Input::load(&args.input)?;
    let backend = match printer {
        Some(print) => backend_plans(print, args.proxy_mode, &map, &loaded.snapshot, &opts, &cfg)?,
        None => Vec::new(),
    };
    let output = PlanOutput {
        report: PlanReport::new(&loaded.snapshot, &map, &opts),
        backend,
    };
    let text = render(&output, args.output)?;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`kproxy plan | head`) is not worth an error message.
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    Ok(if loaded.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The backend's plan for each family the map has (IPv4 alone for an empty map).
fn backend_plans(
    print: backend::PlanPrinter,
    mode: PlanMode,
    map: &ServiceMap,
    snapshot: &Snapshot,
    opts: &BuildOptions,
    cfg: &KubeProxyConfiguration,
) -> Result<Vec<BackendPlan>> {
    let facts = NodeFacts::from_node(&opts.node_name, snapshot.node(&opts.node_name));
    let mode_name = mode
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    let mut families: Vec<IpFamily> = IpFamily::ALL
        .into_iter()
        .filter(|f| !map.family(*f).is_empty())
        .collect();
    if families.is_empty() {
        families.push(IpFamily::V4);
    }
    families
        .into_iter()
        .map(|family| {
            let output = print(map, &facts, cfg, family).map_err(|source| Error::BackendPlan {
                mode: mode_name.clone(),
                source,
            })?;
            Ok(BackendPlan {
                mode: mode_name.clone(),
                family: family.as_api().to_owned(),
                output,
            })
        })
        .collect()
}

/// The output in the chosen format, ending with a newline.
fn render(output: &PlanOutput, format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Table => {
            let mut text = table::render(&output.report);
            for b in &output.backend {
                let _ = write!(text, "\n== {} {} ==\n{}", b.mode, b.family, b.output);
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
            Ok(text)
        }
        OutputFormat::Json => serde_json::to_string_pretty(output)
            .map(|s| s + "\n")
            .map_err(|e| Error::Encode {
                format: "json",
                reason: e.to_string(),
            }),
        OutputFormat::Yaml => serde_saphyr::to_string(output).map_err(|e| Error::Encode {
            format: "yaml",
            reason: e.to_string(),
        }),
    }
}
