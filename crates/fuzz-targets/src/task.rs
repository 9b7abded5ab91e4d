//! A task document (`TaskSpec` as JSON) through the intake check under both rule sets, and the
//! input document parsed on its own.

use wasm_exec_task::{IntakeRules, TaskInput, TaskSpec};

/// Checks: no panic; an accepted task keeps its spec, gets limits within the maxima, and the
/// spec as persisted (JSON again) is accepted as the same task.
pub fn task(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(input) = TaskInput::parse(text) {
        let expected = if text.trim().is_empty() { "" } else { text };
        assert_eq!(input.text, expected, "the input's text is kept as given");
    }
    let Ok(spec) = serde_json::from_str::<TaskSpec>(text) else {
        return;
    };
    for rules in [IntakeRules::default(), IntakeRules::default().cids_only()] {
        let Ok(checked) = spec.check(&rules) else {
            continue;
        };
        assert_eq!(checked.spec, spec, "the check keeps the spec as given");
        let (limits, max) = (&checked.limits, &rules.maxima);
        assert!(limits.timeout <= max.timeout, "{limits:?} over {max:?}");
        assert!(limits.max_memory_mb <= max.max_memory_mb, "{limits:?}");
        assert!(
            limits.max_output_bytes <= max.max_output_bytes,
            "{limits:?}"
        );
        let persisted = serde_json::to_string(&spec).expect("a spec serialises");
        let again: TaskSpec = serde_json::from_str(&persisted).expect("a persisted spec parses");
        assert_eq!(
            again.check(&rules),
            Ok(checked),
            "the persisted spec: {persisted}"
        );
    }
}
