//! Never-panic tests for the parsers that face untrusted input, over seeded pseudo-random inputs
//! (a stand-in for coverage-guided fuzzing, which needs a nightly toolchain this project cannot
//! install). Deterministic: a failure prints the seed and case to replay.

use reelay_server::api::outputs::parse_range;
use reelay_server::storage::{valid_output_path, valid_user_key};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Random strings built from fragments that matter to each parser, plus random bytes.
fn fuzz_string(r: &mut XorShift, fragments: &[&str]) -> String {
    let mut s = String::new();
    for _ in 0..r.below(12) {
        if r.below(4) == 0 {
            let c = char::from_u32((r.next() % 0x2FFF) as u32).unwrap_or('?');
            s.push(c);
        } else {
            s.push_str(r.pick(fragments));
        }
    }
    s
}

#[test]
fn range_parser_never_panics_and_stays_in_bounds() {
    // Edges first: overflowing ends and starts.
    for h in [
        "bytes=0-18446744073709551615",
        "bytes=18446744073709551615-",
        "bytes=-18446744073709551615",
        "bytes=5-18446744073709551615",
    ] {
        for size in [0u64, 10, u64::MAX] {
            if let reelay_server::api::outputs::RangeReq::Partial(range) =
                parse_range(Some(h), size)
            {
                assert!(
                    range.start < range.end && range.end <= size,
                    "{h} size {size}"
                );
            }
        }
    }
    let mut r = XorShift(0x9E3779B97F4A7C15);
    let frags = [
        "bytes=",
        "-",
        ",",
        "0",
        "1",
        "99",
        "18446744073709551615",
        " ",
        "=",
        "x",
        "bytes",
        "999999999999999999999",
    ];
    for case in 0..20_000 {
        let header = fuzz_string(&mut r, &frags);
        let size = [0u64, 1, 100, u64::MAX][r.below(4)];
        if let reelay_server::api::outputs::RangeReq::Partial(range) =
            parse_range(Some(&header), size)
        {
            assert!(
                range.start < range.end && range.end <= size,
                "case {case}: {header:?} size {size} gave {range:?}"
            );
        }
    }
}

#[test]
fn probe_json_parser_never_panics() {
    let mut r = XorShift(0xD1B54A32D192ED03);
    let frags = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"streams\"",
        "\"format\"",
        "\"format_name\"",
        "\"mov\"",
        "\"duration\"",
        "\"2.5\"",
        "\"NaN\"",
        "\"-1e309\"",
        "\"codec_type\"",
        "\"video\"",
        "\"audio\"",
        "\"width\"",
        "4294967295",
        "-1",
        "\"avg_frame_rate\"",
        "\"0/0\"",
        "\"1/0\"",
        "\"30000/1001\"",
        "\"side_data_list\"",
        "\"rotation\"",
        "1e308",
        "-90",
        "\"tags\"",
        "\"rotate\"",
        "\"disposition\"",
        "\"attached_pic\"",
        "null",
        "true",
        "\"index\"",
        "0",
    ];
    for _ in 0..20_000 {
        let json = fuzz_string(&mut r, &frags);
        if let Ok(info) = reelay_media::probe::parse_probe_json(&json) {
            let _ = (
                info.display_dims(),
                info.best_duration(),
                info.demuxer(),
                info.video(),
                info.audio(),
            );
        }
    }
    // Structurally valid documents with hostile values.
    for _ in 0..5_000 {
        let v = |r: &mut XorShift| {
            [
                "0",
                "-1",
                "1e308",
                "\"x\"",
                "null",
                "4294967296",
                "\"1/0\"",
                "\"-0/5\"",
                "[]",
                "{}",
            ][r.below(10)]
        };
        let json = format!(
            r#"{{"streams":[{{"index":{},"codec_type":"video","width":{},"height":{},"avg_frame_rate":{},"side_data_list":[{{"rotation":{}}}],"tags":{{"rotate":{}}}}}],"format":{{"format_name":"mov","duration":{}}}}}"#,
            v(&mut r),
            v(&mut r),
            v(&mut r),
            v(&mut r),
            v(&mut r),
            v(&mut r),
            v(&mut r)
        );
        if let Ok(info) = reelay_media::probe::parse_probe_json(&json) {
            let _ = (info.display_dims(), info.best_duration());
        }
    }
}

#[test]
fn job_specs_and_output_validation_never_panic() {
    let mut r = XorShift(0xA0761D6478BD642F);
    let keys = [
        "preset",
        "name",
        "container",
        "video",
        "audio",
        "trim",
        "codec",
        "width",
        "height",
        "crf",
        "bitrate_kbps",
        "fps",
        "start",
        "duration",
    ];
    let values = [
        "\"mp4-720p\"",
        "\"hls-abr\"",
        "\"../x\"",
        "\"mp4\"",
        "\"webm\"",
        "\"h264\"",
        "\"vp9\"",
        "\"copy\"",
        "\"none\"",
        "0",
        "-1",
        "1e309",
        "4294967296",
        "null",
        "{}",
        "[]",
        "\"\"",
        "51",
        "64",
    ];
    for _ in 0..10_000 {
        let obj = |r: &mut XorShift, depth: usize| -> String {
            let mut parts = vec![];
            for _ in 0..r.below(5) {
                let k = keys[r.below(keys.len())];
                let val = if depth > 0 && r.below(3) == 0 {
                    format!("{{\"codec\":{}}}", values[r.below(values.len())])
                } else {
                    values[r.below(values.len())].to_string()
                };
                parts.push(format!("\"{k}\":{val}"));
            }
            format!("{{{}}}", parts.join(","))
        };
        let outputs: Vec<String> = (0..r.below(4)).map(|_| obj(&mut r, 1)).collect();
        let json = format!("{{\"outputs\":[{}]}}", outputs.join(","));
        if let Ok(spec) = serde_json::from_str::<reelay_protocol::JobSpec>(&json) {
            if let Ok(renditions) = reelay_media::resolve_outputs(&spec.outputs) {
                for rd in &renditions {
                    assert!(reelay_media::plan::valid_output_name(&rd.name), "{json}");
                }
            }
        }
    }
}

#[test]
fn ids_and_keys_never_panic_and_never_allow_traversal() {
    let mut r = XorShift(0xE7037ED1A0B428DB);
    let frags = [
        "aws",
        ".",
        "..",
        "/",
        "\\",
        "%2e",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "a",
        "-",
        "_",
        "=",
        "+",
        " ",
        "\0",
        "é",
    ];
    for _ in 0..20_000 {
        let s = fuzz_string(&mut r, &frags);
        let _ = s.parse::<reelay_protocol::JobId>();
        for ok in [valid_user_key(&s), valid_output_path(&s)] {
            if ok {
                assert!(
                    !s.split('/')
                        .any(|seg| seg == ".." || seg == "." || seg.is_empty()),
                    "{s:?}"
                );
                assert!(
                    !s.starts_with('/') && !s.contains('\\') && !s.contains('\0'),
                    "{s:?}"
                );
            }
        }
    }
}
