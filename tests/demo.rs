//! The README's main job: `satcast-sim demo` succeeds and reports what it did.

use std::process::Command;

use satcast::{bin, seed};

#[test]
fn the_demo_delivers_everything_byte_exact() {
    let seed = seed("DEMO_SEED");
    let output = Command::new(bin("satcast-sim").expect("satcast-sim is built"))
        .args(["demo", "--receivers", "12", "--json", "--seed", &seed.to_string()])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("json summary");
    assert_eq!(summary["receivers"], 12);
    assert_eq!(summary["delivered"], summary["expected"]);
    assert_eq!(summary["misdelivered"], 0);
    assert_eq!(summary["objects"].as_array().map(Vec::len), Some(3));
    assert!(summary["bytes_on_air"].as_u64().unwrap_or(0) > 0);
    println!(
        "demo: {} deliveries, {} bytes on the air, {:.1} s",
        summary["delivered"],
        summary["bytes_on_air"],
        summary["wall_seconds"].as_f64().unwrap_or(0.0)
    );
}
