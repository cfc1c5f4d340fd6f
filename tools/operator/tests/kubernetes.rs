//! packaging/kubernetes as an operator applies it: the configuration files
//! its ConfigMaps carry load in our own parsers (no unknown key, nothing
//! refused), every manifest is listed in the kustomization, and every pod
//! keeps the rules the comments promise (Guaranteed QoS with whole CPUs, the
//! edge's `workers` equal to its CPUs, non-root, read-only root filesystem,
//! probes on /healthz and /readyz). CI also validates each manifest against
//! the Kubernetes schemas (kubernetes-validate, in .ci/run).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/kubernetes")
}

fn yaml(name: &str) -> Value {
    let path = folder().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn the_config_maps_hold_files_our_parsers_take_whole() {
    let path = folder().join("config/gokeyless.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let options = keyless_server::config::parse_file(&path, &text).unwrap();
    assert!(options.unknown_keys.is_empty(), "{:?}", options.unknown_keys);
    let settings = keyless_server::config::resolve(&Default::default(), Some(&path), options).unwrap();
    assert_eq!(settings.listen.port(), 2407);

    let path = folder().join("config/edge.yaml");
    let edge = keyless_edge::config::load(&path).unwrap();
    assert!(edge.unknown_keys.is_empty(), "{:?}", edge.unknown_keys);
    assert_eq!(edge.key_servers, ["keyless-server:2407"], "the headless Service's name");
    assert_eq!(
        edge.tickets.key_file.as_deref(),
        Some(Path::new("/etc/keyless/tickets/ticket-keys"))
    );

    // The edge runs one core per CPU it is given.
    let deployment = yaml("edge.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let cpus: usize = container["resources"]["limits"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(edge.workers, Some(cpus));
}

#[test]
fn every_manifest_is_applied_and_every_pod_keeps_the_rules() {
    let kustomization = yaml("kustomization.yaml");
    let listed = strings(&kustomization["resources"]);
    let mut found: Vec<String> = std::fs::read_dir(folder())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    found.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, found, "resources: must list every manifest");

    for name in ["key-server.yaml", "edge.yaml"] {
        let d = yaml(name);
        let pod = &d["spec"]["template"]["spec"];
        let annotations = &d["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"), "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}");
        for c in pod["containers"].as_sequence().unwrap() {
            let r = &c["resources"];
            assert_eq!(r["requests"], r["limits"], "{name}: requests equal limits (Guaranteed)");
            let cpu = r["limits"]["cpu"].as_str().unwrap();
            assert!(cpu.parse::<u32>().is_ok(), "{name}: whole CPUs, not {cpu}");
            let s = &c["securityContext"];
            assert_eq!(s["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
            assert_eq!(s["allowPrivilegeEscalation"].as_bool(), Some(false), "{name}");
            assert_eq!(strings(&s["capabilities"]["drop"]), ["ALL"], "{name}");
            assert_eq!(
                c["livenessProbe"]["httpGet"]["path"].as_str(),
                Some("/healthz"),
                "{name}"
            );
            assert_eq!(
                c["readinessProbe"]["httpGet"]["path"].as_str(),
                Some("/readyz"),
                "{name}"
            );
            for mount in c["volumeMounts"].as_sequence().unwrap() {
                let at = mount["mountPath"].as_str().unwrap();
                if at != "/tmp" {
                    assert_eq!(mount["readOnly"].as_bool(), Some(true), "{name}: {at} read-only");
                }
            }
        }
    }
    let service = yaml("key-server-service.yaml");
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"), "headless");
    let pdb = yaml("key-server-pdb.yaml");
    assert_eq!(pdb["kind"].as_str(), Some("PodDisruptionBudget"));
}
