//! TensorBoard output, read back with an independent TFRecord reader.
//!
//! `cargo test --release --test tensorboard -- --ignored demo_logdir` writes a
//! two-run logdir to $SPARSEBURN_TB_DEMO_DIR (default: $TMPDIR/sparseburn-tb-demo)
//! for `.ci/check_tensorboard.py`.

use protobuf::Message;
use sparseburn::summary::{build_graph, encode_graph, write_projector, GraphSpec, HParamValue, RunSummary};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tensorboard_proto::api::{DataType as HParamType, Status};
use tensorboard_proto::event::Event;
use tensorboard_proto::graph::GraphDef;
use tensorboard_proto::node_def::NodeDef;
use tensorboard_proto::plugin_hparams::HParamsPluginData;
use tensorboard_proto::summary::Summary_Value;
use tensorboard_proto::types::DataType;

// ---------------------------------------------------------------- reading

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // (crc >> 15) | (crc << 17), then the TFRecord mask delta.
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// TFRecord framing: u64 LE length, masked crc32c of those 8 bytes, data, masked crc32c of data.
fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        assert!(rest.len() >= 12, "truncated record header");
        let (len_bytes, after) = rest.split_at(8);
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(after[..4].try_into().unwrap());
        assert_eq!(len_crc, masked_crc(len_bytes), "length crc");
        let after = &after[4..];
        assert!(after.len() >= len + 4, "truncated record body");
        let (data, after) = after.split_at(len);
        let data_crc = u32::from_le_bytes(after[..4].try_into().unwrap());
        assert_eq!(data_crc, masked_crc(data), "data crc");
        records.push(data.to_vec());
        rest = &after[4..];
    }
    records
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents.")).collect();
    files.sort();
    files
}

fn read_events_file(path: &Path) -> Vec<Event> {
    let events: Vec<Event> = read_records(&std::fs::read(path).unwrap()).iter().map(|r| Event::parse_from_bytes(r).expect("record is an Event")).collect();
    assert_eq!(events[0].get_file_version(), "brain.Event:2");
    events
}

/// The events of the run's single event file.
fn read_events(dir: &Path) -> Vec<Event> {
    let files = event_files(dir);
    assert_eq!(files.len(), 1, "one event file per run: {files:?}");
    read_events_file(&files[0])
}

fn values(events: &[Event]) -> Vec<(i64, Summary_Value)> {
    events.iter().filter(|e| e.has_summary()).flat_map(|e| e.get_summary().get_value().iter().map(move |v| (e.get_step(), v.clone()))).collect()
}

fn tagged(events: &[Event], tag: &str) -> Vec<(i64, Summary_Value)> {
    values(events).into_iter().filter(|(_, v)| v.get_tag() == tag).collect()
}

fn graph_events(events: &[Event]) -> Vec<Vec<u8>> {
    events.iter().filter(|e| e.has_graph_def()).map(|e| e.get_graph_def().to_vec()).collect()
}

fn hparams_data(value: &Summary_Value) -> HParamsPluginData {
    let plugin = value.get_metadata().get_plugin_data();
    assert_eq!(plugin.get_plugin_name(), "hparams");
    // Without a tensor TensorBoard ignores the value; this is its NULL_TENSOR, byte for byte.
    assert_eq!(value.get_tensor().write_to_bytes().unwrap(), b"\x08\x01\x12\x02\x12\x00");
    let data = HParamsPluginData::parse_from_bytes(plugin.get_content()).unwrap();
    assert_eq!(data.get_version(), 0);
    data
}

// ---------------------------------------------------------------- fixtures

/// A log dir above every test folder (tests that check group names pass their own).
fn tmp_log_dir() -> &'static Path {
    Path::new("/")
}

fn spec(dense_device: &str) -> GraphSpec {
    GraphSpec {
        table_rows: 5_000_000_000,
        dim: 64,
        pooling: "mean".into(),
        table_device: "/device:CPU:0".into(),
        dense_device: dense_device.into(),
        head_layers: vec![(64, 32), (32, 4)],
        num_labels: 4,
        table_optimizer: "lazy_adam".into(),
        head_optimizer: "adam".into(),
        batch_size: None,
    }
}

fn node<'a>(graph: &'a GraphDef, name: &str) -> &'a NodeDef {
    graph.get_node().iter().find(|n| n.get_name() == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn output_shapes(node: &NodeDef) -> Vec<Vec<i64>> {
    node.get_attr()["_output_shapes"].get_list().get_shape().iter().map(|s| s.get_dim().iter().map(|d| d.get_size()).collect()).collect()
}

/// Small deterministic pseudo-random numbers (xorshift), no dependency on the code under test.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn scalars_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("nested/run");
    let mut summary = RunSummary::create(&run, tmp_log_dir()).unwrap();
    let expected: Vec<(u64, f32)> = (0..50).map(|s| (s * 10, 1.0 / (s as f32 + 1.0))).collect();
    for &(step, value) in &expected {
        summary.scalar("train/loss", value, step);
        summary.scalar("train/lr", 0.001, step);
    }
    summary.flush();
    summary.close();

    let events = read_events(&run);
    let loss: Vec<(u64, f32)> = tagged(&events, "train/loss").iter().map(|(step, v)| (*step as u64, v.get_simple_value())).collect();
    assert_eq!(loss, expected);
    assert_eq!(tagged(&events, "train/lr").len(), 50);
    assert!(events.iter().all(|e| e.get_wall_time() > 1.6e9));
}

#[test]
fn histogram_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let mut summary = RunSummary::create(tmp.path(), tmp_log_dir()).unwrap();
    let mut vals = noise(10_000, 7);
    vals.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    summary.histogram("weights/table", &vals, 3);
    summary.histogram("weights/empty", &[], 3);
    summary.histogram("weights/non_finite", &[f32::NAN], 3);
    summary.histogram("weights/constant", &[0.5; 7], 4);
    summary.close();

    let events = read_events(tmp.path());
    assert!(tagged(&events, "weights/empty").is_empty());
    assert!(tagged(&events, "weights/non_finite").is_empty());

    let hist = tagged(&events, "weights/table");
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].0, 3);
    let h = hist[0].1.get_histo();
    let finite: Vec<f64> = vals.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
    let min = finite.iter().cloned().fold(f64::MAX, f64::min);
    let max = finite.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = finite.iter().sum();
    let sum_squares: f64 = finite.iter().map(|v| v * v).sum();
    assert_eq!(h.get_num(), 10_000.0);
    assert_eq!((h.get_min(), h.get_max()), (min, max));
    assert!((h.get_sum() - sum).abs() < 1e-6 * sum_squares);
    assert!((h.get_sum_squares() - sum_squares).abs() < 1e-9 * sum_squares);
    // Buckets: right edges ascending, ending at max, counts adding up to num,
    // each count = values in [previous edge, edge) (the last one closed).
    let (limits, counts) = (h.get_bucket_limit(), h.get_bucket());
    assert_eq!(limits.len(), counts.len());
    assert!((20..=60).contains(&limits.len()));
    assert!(limits.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*limits.last().unwrap(), max);
    assert_eq!(counts.iter().sum::<f64>(), 10_000.0);
    for (i, &count) in counts.iter().enumerate() {
        let lo = if i == 0 { f64::MIN } else { limits[i - 1] };
        let last = i + 1 == limits.len();
        let n = finite.iter().filter(|&&v| v >= lo && (v < limits[i] || last)).count();
        assert_eq!(count, n as f64, "bucket {i}");
    }

    let constant = tagged(&events, "weights/constant");
    let c = constant[0].1.get_histo();
    assert_eq!((c.get_min(), c.get_max(), c.get_num(), c.get_sum()), (0.5, 0.5, 7.0, 3.5));
    assert_eq!(c.get_bucket().iter().sum::<f64>(), 7.0);
}

#[test]
fn text_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let mut summary = RunSummary::create(tmp.path(), tmp_log_dir()).unwrap();
    let markdown = "| label | f1 |\n|---|---|\n| spam | 0.9 |\n\n**ünïcode** ok";
    summary.text("eval/report", markdown, 12);
    summary.close();

    let events = read_events(tmp.path());
    let text = tagged(&events, "eval/report");
    assert_eq!(text.len(), 1);
    let (step, value) = &text[0];
    assert_eq!(*step, 12);
    assert_eq!(value.get_metadata().get_plugin_data().get_plugin_name(), "text");
    let tensor = value.get_tensor();
    assert_eq!(tensor.get_dtype(), DataType::DT_STRING);
    assert!(tensor.get_tensor_shape().get_dim().is_empty());
    assert_eq!(tensor.get_string_val(), &[markdown.as_bytes().to_vec()]);
}

#[test]
fn graph_nodes_match_the_spec() {
    let spec = spec("/device:GPU:0");
    let graph = build_graph(&spec);
    assert_eq!(graph.get_versions().get_producer(), 22);

    let table = node(&graph, "embedding/table");
    assert_eq!(table.get_op(), "VariableV2");
    assert_eq!(output_shapes(table), vec![vec![spec.table_rows as i64, spec.dim as i64]]);
    assert_eq!(table.get_attr()["dtype"].get_field_type(), DataType::DT_FLOAT);

    let bag = node(&graph, "embedding/bag_pool");
    assert_eq!(bag.get_op(), "EmbeddingBag");
    assert_eq!(bag.get_input(), ["embedding/table", "input/ids", "input/offsets"]);
    assert_eq!(bag.get_attr()["pooling"].get_s(), b"mean");
    assert_eq!(output_shapes(bag), vec![vec![-1, 64]]);

    assert_eq!(node(&graph, "head/linear_0/MatMul").get_input(), ["embedding/bag_pool", "head/linear_0/weight"]);
    assert_eq!(node(&graph, "head/linear_0/BiasAdd").get_input(), ["head/linear_0/MatMul", "head/linear_0/bias"]);
    assert_eq!(node(&graph, "head/relu_0").get_input(), ["head/linear_0/BiasAdd"]);
    assert_eq!(node(&graph, "head/linear_1/MatMul").get_input(), ["head/relu_0", "head/linear_1/weight"]);
    assert!(graph.get_node().iter().all(|n| n.get_name() != "head/relu_1"), "no ReLU after the last layer");
    assert_eq!(output_shapes(node(&graph, "head/linear_0/weight")), vec![vec![64, 32]]);
    assert_eq!(output_shapes(node(&graph, "head/linear_1/BiasAdd")), vec![vec![-1, 4]]);

    let loss = node(&graph, "loss/softmax_cross_entropy");
    assert_eq!(loss.get_input(), ["head/linear_1/BiasAdd", "input/labels"]);

    let lazy = node(&graph, "optimizer/lazy_adam");
    assert_eq!(&lazy.get_input()[..2], ["embedding/table", "gradients/bag_pool_grad"]);
    let adam = node(&graph, "optimizer/adam");
    for param in ["head/linear_0/weight", "head/linear_0/bias", "head/linear_1/weight", "head/linear_1/bias"] {
        assert!(adam.get_input().iter().any(|i| i == param), "adam updates {param}");
    }

    // Devices: the sparse side on the host, the head on the dense device.
    for name in ["embedding/table", "embedding/bag_pool", "gradients/bag_pool_grad", "optimizer/lazy_adam"] {
        assert_eq!(node(&graph, name).get_device(), "/device:CPU:0", "{name}");
    }
    for name in ["head/linear_0/weight", "head/linear_1/MatMul", "loss/softmax_cross_entropy", "optimizer/adam"] {
        assert_eq!(node(&graph, name).get_device(), "/device:GPU:0", "{name}");
    }

    // Every node renders: device, _output_shapes, a dtype/T where TF has one,
    // and every input names a node (":k" selects an output that exists).
    let names: HashMap<&str, &NodeDef> = graph.get_node().iter().map(|n| (n.get_name(), n)).collect();
    assert_eq!(names.len(), graph.get_node().len(), "unique names");
    for n in graph.get_node() {
        assert!(!n.get_device().is_empty(), "{} has a device", n.get_name());
        assert!(n.get_attr().contains_key("_output_shapes"), "{}", n.get_name());
        assert!(n.get_attr().contains_key("T") || n.get_attr().contains_key("dtype") || n.get_op() == "NoOp", "{}", n.get_name());
        for input in n.get_input() {
            if let Some(control) = input.strip_prefix('^') {
                assert!(names.contains_key(control), "{} waits for missing {input}", n.get_name());
                continue;
            }
            let (src, port) = input.split_once(':').map_or((input.as_str(), 0), |(s, p)| (s, p.parse().unwrap()));
            let src = names.get(src).unwrap_or_else(|| panic!("{} reads missing {input}", n.get_name()));
            assert!(port < output_shapes(src).len(), "{} reads missing output {input}", n.get_name());
        }
    }

    // A known batch size replaces -1.
    let fixed = build_graph(&GraphSpec { batch_size: Some(256), ..spec.clone() });
    assert_eq!(output_shapes(node(&fixed, "embedding/bag_pool")), vec![vec![256, 64]]);
}

/// Control inputs of a node (`^name`), without the caret.
fn control_inputs(node: &NodeDef) -> Vec<&str> {
    node.get_input().iter().filter_map(|i| i.strip_prefix('^')).collect()
}

/// Every node that must run before `name`: data and control inputs, transitively.
fn ancestors<'a>(graph: &'a GraphDef, name: &str) -> std::collections::BTreeSet<&'a str> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![node(graph, name)];
    while let Some(n) = todo.pop() {
        for input in n.get_input() {
            let src = input.trim_start_matches('^');
            let src = src.split_once(':').map_or(src, |(s, _)| s);
            let src = node(graph, src);
            if seen.insert(src.get_name()) {
                todo.push(src);
            }
        }
    }
    seen
}

#[test]
fn the_step_order_is_in_the_graph_as_control_dependencies() {
    let graph = build_graph(&spec("/device:GPU:0"));
    // Control inputs come after data inputs, as TF requires.
    for n in graph.get_node() {
        let first_control = n.get_input().iter().position(|i| i.starts_with('^'));
        if let Some(k) = first_control {
            assert!(n.get_input()[k..].iter().all(|i| i.starts_with('^')), "{}: data input after a control input: {:?}", n.get_name(), n.get_input());
        }
    }
    // Both optimizers wait for both backward passes; where a data edge already
    // says so, no control edge repeats it (TF's control_dependencies skips those).
    let lazy = node(&graph, "optimizer/lazy_adam");
    assert_eq!(control_inputs(lazy), ["gradients/head_grad"]);
    let adam = node(&graph, "optimizer/adam");
    assert_eq!(control_inputs(adam), ["gradients/bag_pool_grad"]);
    for opt in ["optimizer/lazy_adam", "optimizer/adam"] {
        let before = ancestors(&graph, opt);
        for grad in ["gradients/head_grad", "gradients/bag_pool_grad"] {
            assert!(before.contains(grad), "{opt} runs after {grad}");
        }
    }
    // The step ends after both optimizers.
    let step = node(&graph, "train/step");
    assert_eq!(step.get_op(), "NoOp");
    assert_eq!(control_inputs(step), ["optimizer/lazy_adam", "optimizer/adam"]);
    // The next step's lookup reads the table after this step's table update.
    let next = node(&graph, "next_step/bag_pool");
    assert_eq!(next.get_op(), "EmbeddingBag");
    assert_eq!(next.get_input()[0], "embedding/table");
    assert_eq!(control_inputs(next), ["optimizer/lazy_adam"]);
    // Evaluation reads the table and every head parameter after the step.
    let eval = node(&graph, "eval/evaluate");
    assert_eq!(control_inputs(eval), ["train/step"]);
    let before_eval = ancestors(&graph, "eval/evaluate");
    for name in ["embedding/table", "head/linear_0/weight", "head/linear_1/bias", "optimizer/lazy_adam", "optimizer/adam"] {
        assert!(before_eval.contains(name), "evaluation runs after {name}");
    }
    // No cycle: the step's own lookup does not wait for its update.
    assert!(!ancestors(&graph, "embedding/bag_pool").contains("optimizer/lazy_adam"), "the forward lookup precedes the update");
    // The same holds with one optimizer algorithm for both (distinct node names).
    let same = build_graph(&GraphSpec { table_optimizer: "adam".into(), ..spec("/device:CPU:0") });
    assert_eq!(control_inputs(node(&same, "train/step")), ["optimizer/adam_table", "optimizer/adam_head"]);
}

#[test]
fn every_run_is_its_own_hparams_session_group() {
    // An A/B comparison: runs/<name>/<arm>/seed-<k>, and two experiments whose
    // train runs share a folder name.
    let tmp = tempfile::tempdir().unwrap();
    let runs = ["ab/lazy_adam/seed-1", "ab/lazy_adam/seed-2", "ab/dense_adam/seed-1", "ab/dense_adam/seed-2", "quickstart/lazy_adam-1", "other/lazy_adam-1"];
    for run in runs {
        let mut summary = RunSummary::create(&tmp.path().join(run), tmp.path()).unwrap();
        assert_eq!(summary.group(), run);
        summary.hparams(&[("lr".into(), HParamValue::Num(0.1))], &["eval/loss"]);
        summary.close();
    }
    let groups: Vec<String> = runs
        .iter()
        .map(|run| {
            let events = read_events(&tmp.path().join(run));
            let start = tagged(&events, "_hparams_/session_start_info");
            assert_eq!(start.len(), 1);
            hparams_data(&start[0].1).get_session_start_info().get_group_name().to_string()
        })
        .collect();
    assert_eq!(groups, runs, "each run's group is its path under the log dir");
    // A relative log dir spelled differently still gives the same name.
    let cwd = std::env::current_dir().unwrap();
    let rel = tempfile::tempdir_in(&cwd).unwrap();
    let rel_name = rel.path().file_name().unwrap().to_owned();
    let run = Path::new(&rel_name).join("exp/arm/seed-3");
    let summary = RunSummary::create(&run, &Path::new(".").join(&rel_name)).unwrap();
    assert_eq!(summary.group(), "exp/arm/seed-3");
    summary.close();
    // Outside the log dir: the whole path, still unique.
    let outside = tmp.path().join("elsewhere/run");
    let summary = RunSummary::create(&outside, &tmp.path().join("logs")).unwrap();
    assert_eq!(Path::new(summary.group()), outside.canonicalize().unwrap());
    summary.close();
}

#[test]
fn graph_bytes_are_deterministic() {
    let spec = spec("/device:CPU:0");
    let (a, b) = (build_graph(&spec), build_graph(&spec));
    assert_eq!(a, b);
    let bytes = encode_graph(&a);
    assert_eq!(bytes, encode_graph(&b));
    assert_eq!(GraphDef::parse_from_bytes(&bytes).unwrap(), a, "encode_graph is a faithful encoding");

    // Same optimizer on both sides still gives distinct node names.
    let same = build_graph(&GraphSpec { table_optimizer: "adam".into(), ..spec.clone() });
    let names: std::collections::HashSet<_> = same.get_node().iter().map(|n| n.get_name()).collect();
    assert_eq!(names.len(), same.get_node().len());

    // Logging 1 or 1000 steps: one graph event each, byte-identical.
    let tmp = tempfile::tempdir().unwrap();
    let mut graphs = Vec::new();
    for steps in [1u64, 1000] {
        let dir = tmp.path().join(format!("steps_{steps}"));
        let mut summary = RunSummary::create(&dir, tmp_log_dir()).unwrap();
        summary.graph(&spec);
        for step in 0..steps {
            summary.scalar("train/loss", 1.0 / (step + 1) as f32, step);
        }
        summary.close();
        let events = read_events(&dir);
        let mut found = graph_events(&events);
        assert_eq!(found.len(), 1, "{steps} steps");
        graphs.push(found.pop().unwrap());
    }
    assert_eq!(graphs[0], graphs[1]);
    assert_eq!(graphs[0], bytes);
}

#[test]
fn hparams_decode_to_the_given_values() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("lazy_adam_lr3e-3");
    let hparams = vec![
        ("optimizer".to_string(), HParamValue::Str("lazy_adam".into())),
        ("lr".to_string(), HParamValue::Num(0.003)),
        ("dim".to_string(), HParamValue::Num(64.0)),
        ("bias".to_string(), HParamValue::Bool(true)),
    ];
    let mut summary = RunSummary::create(&run, tmp.path()).unwrap();
    summary.hparams(&hparams, &["eval/accuracy", "eval/loss"]);
    summary.scalar("eval/accuracy", 0.9, 10);
    summary.close();

    let events = read_events(&run);
    let start = tagged(&events, "_hparams_/session_start_info");
    assert_eq!(start.len(), 1);
    let data = hparams_data(&start[0].1);
    let info = data.get_session_start_info();
    assert_eq!(info.get_hparams().len(), 4);
    assert_eq!(info.get_hparams()["optimizer"].get_string_value(), "lazy_adam");
    assert_eq!(info.get_hparams()["lr"].get_number_value(), 0.003);
    assert_eq!(info.get_hparams()["dim"].get_number_value(), 64.0);
    assert!(info.get_hparams()["bias"].get_bool_value());
    assert_eq!(info.get_group_name(), "lazy_adam_lr3e-3");
    assert!(info.get_start_time_secs() > 1.6e9);

    let experiment = tagged(&events, "_hparams_/experiment");
    assert_eq!(experiment.len(), 1);
    let data = hparams_data(&experiment[0].1);
    let exp = data.get_experiment();
    let infos: Vec<(&str, HParamType)> = exp.get_hparam_infos().iter().map(|i| (i.get_name(), i.get_field_type())).collect();
    assert_eq!(
        infos,
        [("optimizer", HParamType::DATA_TYPE_STRING), ("lr", HParamType::DATA_TYPE_FLOAT64), ("dim", HParamType::DATA_TYPE_FLOAT64), ("bias", HParamType::DATA_TYPE_BOOL)]
    );
    let metrics: Vec<&str> = exp.get_metric_infos().iter().map(|m| m.get_name().get_tag()).collect();
    assert_eq!(metrics, ["eval/accuracy", "eval/loss"]);

    let end = tagged(&events, "_hparams_/session_end_info");
    assert_eq!(end.len(), 1);
    assert_eq!(hparams_data(&end[0].1).get_session_end_info().get_status(), Status::STATUS_SUCCESS);
}

#[test]
fn dropping_without_close_records_a_failed_session() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut summary = RunSummary::create(tmp.path(), tmp_log_dir()).unwrap();
        summary.hparams(&[("lr".into(), HParamValue::Num(0.1))], &["eval/loss"]);
        summary.scalar("train/loss", 2.0, 1);
    }
    let events = read_events(tmp.path());
    assert_eq!(tagged(&events, "train/loss").len(), 1, "drop flushes everything");
    let end = tagged(&events, "_hparams_/session_end_info");
    assert_eq!(hparams_data(&end[0].1).get_session_end_info().get_status(), Status::STATUS_FAILURE);
}

#[test]
fn projector_files_parse_back() {
    let tmp = tempfile::tempdir().unwrap();
    let words: Vec<String> = ["the", "tab\there", "", "ünï"].iter().map(|s| s.to_string()).collect();
    let dim = 3;
    let vectors = noise(words.len() * dim, 3);
    write_projector(tmp.path(), &words, &vectors, dim).unwrap();

    let tensors = std::fs::read_to_string(tmp.path().join("projector/tensors.tsv")).unwrap();
    let parsed: Vec<f32> = tensors.lines().inspect(|l| assert_eq!(l.split('\t').count(), dim)).flat_map(|l| l.split('\t').map(|x| x.parse::<f32>().unwrap())).collect();
    assert_eq!(parsed, vectors, "values round-trip exactly");

    let metadata = std::fs::read_to_string(tmp.path().join("projector/metadata.tsv")).unwrap();
    let lines: Vec<&str> = metadata.lines().collect();
    assert_eq!(lines.len(), words.len(), "one word per line, no header");
    assert_eq!(lines[0], "the");
    assert!(lines.iter().all(|l| !l.contains('\t') && !l.is_empty()));

    let config = std::fs::read_to_string(tmp.path().join("projector_config.pbtxt")).unwrap();
    for field in [r#"tensor_name: "word_embedding""#, r#"tensor_path: "projector/tensors.tsv""#, r#"metadata_path: "projector/metadata.tsv""#] {
        assert!(config.contains(field), "{field} in {config}");
    }
    assert!(config.trim_start().starts_with("embeddings {") && config.trim_end().ends_with('}'));

    assert!(write_projector(tmp.path(), &words, &vectors[1..], dim).is_err(), "size mismatch");
}

#[test]
fn two_runs_in_the_same_second_do_not_interfere() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = RunSummary::create(&dir_a, tmp_log_dir()).unwrap();
    let mut b = RunSummary::create(&dir_b, tmp_log_dir()).unwrap();
    for step in 0..100 {
        a.scalar("train/loss", step as f32, step);
        b.scalar("train/loss", -(step as f32), step);
    }
    a.close();
    b.close();
    for (dir, sign) in [(&dir_a, 1.0), (&dir_b, -1.0)] {
        let loss = tagged(&read_events(dir), "train/loss");
        assert_eq!(loss.len(), 100);
        assert!(loss.iter().all(|(step, v)| v.get_simple_value() == sign * *step as f32));
    }
}

#[test]
fn one_writer_per_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let first = RunSummary::create(tmp.path(), tmp_log_dir()).unwrap();
    assert!(RunSummary::create(tmp.path(), tmp_log_dir()).is_err(), "a second live writer is refused");
    assert!(RunSummary::create(&tmp.path().join("."), tmp_log_dir()).is_err(), "also under another spelling");
    first.close();

    // Reopening right away (same second) must not truncate the first file.
    let mut again = RunSummary::create(tmp.path(), tmp_log_dir()).unwrap();
    again.scalar("resumed", 1.0, 1);
    again.close();
    let files = event_files(tmp.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(read_events_file(&files[0]).len(), 1, "first file intact");
    assert_eq!(tagged(&read_events_file(&files[1]), "resumed").len(), 1);
}

#[test]
fn unusable_run_dir_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not_a_dir");
    std::fs::write(&file, "x").unwrap();
    assert!(RunSummary::create(&file.join("run"), tmp_log_dir()).is_err());
}

/// Writes a two-run A/B logdir (GPU vs CPU head) for `.ci/check_tensorboard.py`
/// and for looking at it in TensorBoard.
#[test]
#[ignore]
fn demo_logdir() {
    let root = std::env::var_os("SPARSEBURN_TB_DEMO_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("sparseburn-tb-demo"));
    println!("demo logdir: {}", root.display());
    for (name, optimizer, lr, device) in [("a_lazy_adam", "lazy_adam", 0.003, "/device:GPU:0"), ("b_adam", "adam", 0.001, "/device:CPU:0")] {
        let dir = root.join(name);
        let mut summary = RunSummary::create(&dir, tmp_log_dir()).unwrap();
        summary.graph(&GraphSpec { table_optimizer: optimizer.into(), ..spec(device) });
        summary.hparams(
            &[
                ("table_optimizer".into(), HParamValue::Str(optimizer.into())),
                ("lr".into(), HParamValue::Num(lr)),
                ("dim".into(), HParamValue::Num(64.0)),
                ("cuda".into(), HParamValue::Bool(device.contains("GPU"))),
            ],
            &["eval/accuracy", "eval/loss"],
        );
        for step in 0..200u64 {
            let t = step as f32 * lr as f32 * 5.0;
            summary.scalar("train/loss", 1.4 * (-t).exp() + 0.1 * noise(1, step + 1)[0].abs(), step);
            if step % 20 == 19 {
                summary.scalar("eval/loss", 1.3 * (-t).exp() + 0.2, step);
                summary.scalar("eval/accuracy", 1.0 - 0.7 * (-t).exp(), step);
                let spread = 0.1 + step as f32 / 400.0;
                let weights: Vec<f32> = noise(5000, step).iter().map(|v| v * spread).collect();
                summary.histogram("weights/embedding_table", &weights, step);
            }
        }
        summary.text("run/config", &format!("**optimizer** `{optimizer}`, lr {lr}\n\n| k | v |\n|---|---|\n| dim | 64 |"), 0);
        summary.close();
        let words: Vec<String> = (0..50).map(|i| format!("word{i}")).collect();
        write_projector(&dir, &words, &noise(50 * 8, 11), 8).unwrap();
    }
}

/// A full disk (here: a 4 KiB file size limit) must not panic the trainer's
/// hot path: the writer stops, the run goes on. Runs itself in a child process
/// because the limit applies to the whole process.
#[test]
fn io_errors_never_panic() {
    if let Ok(dir) = std::env::var("SPARSEBURN_TB_FULL_DISK_DIR") {
        let mut summary = RunSummary::create(Path::new(&dir), tmp_log_dir()).unwrap();
        summary.hparams(&[("lr".into(), HParamValue::Num(0.1))], &["eval/loss"]);
        for step in 0..20_000 {
            summary.scalar("train/loss", step as f32, step);
            summary.histogram("weights", &[1.0, 2.0, step as f32], step);
        }
        summary.graph(&spec("/device:CPU:0"));
        summary.flush();
        summary.close();
        println!("child survived");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Ignored SIGXFSZ survives exec, so writes past the limit fail with EFBIG instead of killing.
    let out = std::process::Command::new("bash")
        .args(["-c", r#"ulimit -f 4 && trap '' XFSZ && exec "$0" --exact io_errors_never_panic --nocapture --test-threads 1"#])
        .arg(&exe)
        .env("SPARSEBURN_TB_FULL_DISK_DIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("child survived"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let file = &event_files(tmp.path())[0];
    let len = std::fs::metadata(file).unwrap().len();
    assert!(len > 0 && len <= 4096, "the limit was hit: {len} bytes");
}
