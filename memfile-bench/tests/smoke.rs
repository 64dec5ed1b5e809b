//! Runs the harness end to end at `--smoke` size: every case, every alternative, real child
//! processes, the JSON and SVG outputs.

use std::process::Command;

#[test]
fn smoke_run_writes_every_case_and_ratio() {
    let dir = std::env::temp_dir().join(format!("memfile-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let svg = dir.join("out.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_memfile-bench"))
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "harness failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("shmem_thp="),
        "machine line missing:\n{stdout}"
    );

    let text = std::fs::read_to_string(&json).unwrap();
    assert!(
        text.contains("\"machine\": {") && text.contains("\"hugepages_free\""),
        "{text}"
    );
    let expected = [
        ("small_rtt", "raw_seqpacket"),
        ("small_rtt", "ipc_channel"),
        ("frozen_4k_fixed", "raw_syscalls"),
        ("frozen_4k_fixed", "ipc_channel_shmem"),
        ("large_e2e", "in_process"),
        ("large_e2e", "socket_copy"),
        ("large_e2e", "ipc_channel_shmem"),
        ("typed_vec", "ipc_channel"),
        ("typed_bytes", "ipc_channel"),
        ("fanout_4", "socket_copy"),
        ("pipeline_3", "socket_copy"),
    ];
    for (case, baseline) in expected {
        let entry = format!("\"case\": \"{case}\", ");
        let found = text
            .lines()
            .any(|l| l.contains(&entry) && l.contains(&format!("\"baseline\": \"{baseline}\"")));
        assert!(found, "no entry for {case} vs {baseline} in:\n{text}");
    }
    // Three large_e2e sizes, each against three baselines.
    assert_eq!(text.matches("\"case\": \"large_e2e\"").count(), 9, "{text}");
    // Every ratio is a positive number.
    for part in text.split("\"ratio\": ").skip(1) {
        let num: String = part
            .chars()
            .take_while(|c| !matches!(c, ',' | '}'))
            .collect();
        let ratio: f64 = num
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ratio {num:?}"));
        assert!(ratio > 0.0 && ratio.is_finite(), "ratio {ratio}");
    }

    // The report's schema: every case entry has the six keys of the issue, with the
    // right types, and ratio = baseline_s / ours_s.
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(report["machine"].is_object(), "{text}");
    let cases = report["cases"].as_array().expect("cases array");
    assert!(!cases.is_empty());
    for c in cases {
        assert!(c["case"].is_string() && c["baseline"].is_string(), "{c}");
        assert!(c["size_bytes"].is_u64(), "{c}");
        let ours = c["ours_s"].as_f64().expect("ours_s");
        let base = c["baseline_s"].as_f64().expect("baseline_s");
        let ratio = c["ratio"].as_f64().expect("ratio");
        assert!(ours > 0.0 && base > 0.0, "{c}");
        assert!(
            (ratio - base / ours).abs() <= 1e-6 * ratio.max(1.0),
            "ratio != baseline_s / ours_s in {c}"
        );
    }

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    for alt in ["ours", "in_process", "socket_copy", "ipc_channel_shmem"] {
        assert!(
            plot.contains(&format!(">{alt}</text>")),
            "legend lacks {alt}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
