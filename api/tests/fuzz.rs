//! Mutation fuzzing of every request decoder: random bytes and mutated valid bodies
//! must never panic. `KEELSON_FUZZ_ITERATIONS` sets the count (default 20,000 so the
//! suite stays quick; run with 300000 by hand for a deeper pass). A coverage-guided
//! target for the same entry point lives in `fuzz/` (cargo-fuzz).

use keelson_api::fuzz::{credential_seeds, exercise};

/// Valid bodies to mutate: the shapes kubectl and controllers send.
const SEEDS: &[&str] = &[
    r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default","labels":{"app":"web"}},"spec":{"containers":[{"name":"main","image":"nginx:1.27","ports":[{"containerPort":80}],"resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"cpu":"1"}}}],"nodeSelector":{"disk":"ssd"}}}"#,
    r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["fe"]}]},"template":{"metadata":{"labels":{"app":"web","tier":"fe"}},"spec":{"containers":[{"name":"main","image":"nginx"}]}},"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%","maxUnavailable":1}}}}"#,
    r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"type":"NodePort","selector":{"app":"web"},"ports":[{"name":"http","port":80,"targetPort":"http"}]}}"#,
    r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j","namespace":"d","uid":"u"},"spec":{"completions":3,"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox","command":["sh","-c","exit 0"]}]}}}}"#,
    r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"d","annotations":{"a/b":"c"}},"data":{"k":"v"},"binaryData":{"b":"aGVsbG8="}}"#,
    r#"[{"op":"replace","path":"/spec/replicas","value":3},{"op":"remove","path":"/metadata/labels/a"},{"op":"move","from":"/a","path":"/b/-"}]"#,
    r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"main"}],"containers":[{"name":"main","$patch":"delete"}]}}},"metadata":{"$deleteFromPrimitiveList/finalizers":["x"],"$retainKeys":["name"]}}"#,
    "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  taints:\n  - key: k\n    effect: NoSchedule\n",
    "/api/v1/namespaces/default/pods/web-1/status?labelSelector=app%3Dweb%2Ctier+notin+%28db%29&fieldSelector=spec.nodeName%3Dn1",
];

/// xorshift64*: a deterministic generator, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that steer mutations toward interesting JSON.
const DICTIONARY: &[&[u8]] = &[
    b"null",
    b"{}",
    b"[]",
    b"\"\"",
    b"-1",
    b"1e400",
    b"\"$patch\"",
    b"\"delete\"",
    b"\"replace\"",
    b"\"metadata\"",
    b"\"spec\"",
    b"\"status\"",
    b"\"containers\"",
    b"9999999999999999999",
    b"\"\\u0000\"",
    b"\"100Mi\"",
    b"\"1e3\"",
    b"\"0.5\"",
    b"true",
    b",",
    b":",
    b"\"name\"",
    b"\"generateName\"",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            1 if !data.is_empty() => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            2 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 if !data.is_empty() => {
                // Duplicate a slice: deep nesting and repeated keys.
                let start = rng.below(data.len());
                let end = (start + rng.below(64)).min(data.len());
                let piece = data[start..end].to_vec();
                data.splice(at..at, piece);
            }
            4 => data.truncate(at),
            _ => data.insert(at, rng.next() as u8),
        }
    }
    data
}

#[test]
fn no_body_path_or_query_panics_the_decoders() {
    let iterations: usize =
        std::env::var("KEELSON_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for i in 0..iterations {
        let input = if i % 4 == 0 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            let seed = SEEDS[rng.below(SEEDS.len())];
            mutate(&mut rng, seed.as_bytes())
        };
        accepted += exercise(&input);
    }
    for seed in SEEDS {
        accepted += exercise(seed.as_bytes());
    }
    assert!(accepted > 0, "the seeds exercise the accepting paths too");
}

#[test]
fn no_certificate_or_token_panics_the_authenticators() {
    let iterations: usize =
        std::env::var("KEELSON_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000) / 4;
    let seeds = credential_seeds();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut accepted = 0;
    for _ in 0..iterations {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        accepted += exercise(&input);
    }
    assert!(accepted > 0, "mutated credentials reach the accepting paths too");
}
