//! The model as a TensorFlow-style `GraphDef`, so TensorBoard's graph view can draw it.
//!
//! Op names follow TF where TF has the op (`VariableV2`, `MatMul`, `BiasAdd`, ...);
//! the sparse parts use descriptive names (`EmbeddingBag`, `LazyAdam`), which
//! TensorBoard renders like any other op.

use protobuf::{CodedOutputStream, Message, RepeatedField};
use tensorboard_proto::attr_value::{AttrValue, AttrValue_ListValue};
use tensorboard_proto::graph::GraphDef;
use tensorboard_proto::node_def::NodeDef;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_proto::versions::VersionDef;

/// A description of the model as it actually runs, built by the trainer from
/// the real model's parameter shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSpec {
    pub table_rows: u64,
    pub dim: usize,
    /// "mean" | "sum" | "sqrtn"
    pub pooling: String,
    /// e.g. "/device:CPU:0"
    pub table_device: String,
    /// e.g. "/device:CPU:0" or "/device:GPU:0"
    pub dense_device: String,
    /// (in, out) of each Linear, ReLU between consecutive ones.
    pub head_layers: Vec<(usize, usize)>,
    pub num_labels: usize,
    /// e.g. "lazy_adam"
    pub table_optimizer: String,
    /// e.g. "adam"
    pub head_optimizer: String,
    /// None → -1 (unknown) in shapes.
    pub batch_size: Option<usize>,
}

impl GraphSpec {
    /// Shape mismatches between the bag, the head and the labels, if any.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut width = self.dim;
        for (i, &(fan_in, fan_out)) in self.head_layers.iter().enumerate() {
            if fan_in != width {
                out.push(format!("head layer {i} takes {fan_in} inputs but receives {width}"));
            }
            width = fan_out;
        }
        if width != self.num_labels {
            out.push(format!("head emits {width} logits for {} labels", self.num_labels));
        }
        out
    }
}

/// The node that ends a training step (after both optimizers).
pub const STEP_DONE: &str = "train/step";

/// GraphDef `producer` version, as TF 1.x writes it.
const PRODUCER: i32 = 22;

/// Builds the graph from `spec`. Pure and deterministic: depends on nothing but `spec`.
pub fn build_graph(spec: &GraphSpec) -> GraphDef {
    let batch = spec.batch_size.map_or(-1, |b| b as i64);
    let dim = spec.dim as i64;
    let (cpu, dense) = (spec.table_device.as_str(), spec.dense_device.as_str());
    let mut nodes = Vec::new();

    // Inputs: a batch of bags as flat ids plus one offset per bag (EmbeddingBag layout).
    for (name, shape) in [("input/ids", [-1]), ("input/offsets", [batch]), ("input/labels", [batch])] {
        nodes.push(Node::new(name, "Placeholder", cpu).attr("dtype", dtype(DataType::DT_INT64)).attr("shape", shape_attr(&shape)).outputs(&[&shape]));
    }

    // The sparse part lives on the table's device (host memory unless `placement.embedding` says otherwise).
    let table_shape = [spec.table_rows as i64, dim];
    nodes.push(variable("embedding/table", &table_shape, cpu));
    nodes.push(
        Node::new("embedding/bag_pool", "EmbeddingBag", cpu)
            .inputs(&["embedding/table", "input/ids", "input/offsets"])
            .attr("T", dtype(DataType::DT_FLOAT))
            .attr("pooling", string(&spec.pooling))
            .outputs(&[&[batch, dim]]),
    );

    // Dense head: Linear (MatMul + BiasAdd), ReLU between consecutive layers.
    let mut prev = "embedding/bag_pool".to_string();
    let mut head_params: Vec<(String, Vec<i64>)> = Vec::new();
    for (i, &(fan_in, fan_out)) in spec.head_layers.iter().enumerate() {
        let (fan_in, fan_out) = (fan_in as i64, fan_out as i64);
        let scope = format!("head/linear_{i}");
        let (weight, bias) = (format!("{scope}/weight"), format!("{scope}/bias"));
        let (matmul, bias_add) = (format!("{scope}/MatMul"), format!("{scope}/BiasAdd"));
        nodes.push(variable(&weight, &[fan_in, fan_out], dense));
        nodes.push(variable(&bias, &[fan_out], dense));
        nodes.push(
            Node::new(&matmul, "MatMul", dense)
                .inputs(&[&prev, &weight])
                .attr("T", dtype(DataType::DT_FLOAT))
                .attr("transpose_a", boolean(false))
                .attr("transpose_b", boolean(false))
                .outputs(&[&[batch, fan_out]]),
        );
        nodes.push(
            Node::new(&bias_add, "BiasAdd", dense).inputs(&[&matmul, &bias]).attr("T", dtype(DataType::DT_FLOAT)).attr("data_format", string("NHWC")).outputs(&[&[batch, fan_out]]),
        );
        prev = bias_add;
        if i + 1 < spec.head_layers.len() {
            let relu = format!("head/relu_{i}");
            nodes.push(Node::new(&relu, "Relu", dense).inputs(&[&prev]).attr("T", dtype(DataType::DT_FLOAT)).outputs(&[&[batch, fan_out]]));
            prev = relu;
        }
        head_params.push((weight, vec![fan_in, fan_out]));
        head_params.push((bias, vec![fan_out]));
    }

    // Output 0: per-example loss, output 1: gradient w.r.t. the logits (as in TF).
    let labels = spec.num_labels as i64;
    nodes.push(
        Node::new("loss/softmax_cross_entropy", "SparseSoftmaxCrossEntropyWithLogits", dense)
            .inputs(&[&prev, "input/labels"])
            .attr("T", dtype(DataType::DT_FLOAT))
            .attr("Tlabels", dtype(DataType::DT_INT64))
            .outputs(&[&[batch], &[batch, labels]]),
    );

    // Backward: the head's backprop yields the gradient w.r.t. the pooled bags
    // (output 0) and one gradient per head parameter (outputs 1..); the bag's
    // backprop turns the former into sparse rows (values, row ids) on the host.
    let mut grad_inputs = vec!["loss/softmax_cross_entropy:1".to_string(), "embedding/bag_pool".into()];
    grad_inputs.extend(head_params.iter().map(|(name, _)| name.clone()));
    let mut grad_shapes = vec![vec![batch, dim]];
    grad_shapes.extend(head_params.iter().map(|(_, shape)| shape.clone()));
    nodes.push(
        Node::new("gradients/head_grad", "HeadGrad", dense)
            .inputs(&grad_inputs.iter().map(String::as_str).collect::<Vec<_>>())
            .attr("T", dtype(DataType::DT_FLOAT))
            .outputs(&grad_shapes.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    );
    nodes.push(
        Node::new("gradients/bag_pool_grad", "EmbeddingBagGrad", cpu)
            .inputs(&["gradients/head_grad", "input/ids", "input/offsets"])
            .attr("T", dtype(DataType::DT_FLOAT))
            .attr("pooling", string(&spec.pooling))
            .outputs(&[&[-1, dim], &[-1]]),
    );

    // Optimizers: the table's only sees the rows the batch touched. Both run
    // after both backward passes (the trainer's order), which the control
    // inputs (`^name`, dashed in TensorBoard) show where no data edge does, as
    // `tf.control_dependencies([head_grad, bag_pool_grad])` would write them.
    let (table_opt, head_opt) = optimizer_names(&spec.table_optimizer, &spec.head_optimizer);
    nodes.push(
        Node::new(&table_opt, &camel_case(&spec.table_optimizer), cpu)
            .inputs(&["embedding/table", "gradients/bag_pool_grad", "gradients/bag_pool_grad:1", "^gradients/head_grad"])
            .attr("T", dtype(DataType::DT_FLOAT))
            .outputs(&[&table_shape]),
    );
    let mut opt_inputs: Vec<String> = head_params.iter().map(|(name, _)| name.clone()).collect();
    opt_inputs.extend((1..=head_params.len()).map(|k| format!("gradients/head_grad:{k}")));
    opt_inputs.push("^gradients/bag_pool_grad".into());
    nodes.push(
        Node::new(&head_opt, &camel_case(&spec.head_optimizer), dense)
            .inputs(&opt_inputs.iter().map(String::as_str).collect::<Vec<_>>())
            .attr("T", dtype(DataType::DT_FLOAT))
            .outputs(&head_params.iter().map(|(_, s)| s.as_slice()).collect::<Vec<_>>()),
    );

    // The step ends when both optimizers have run (TF's `tf.group` train op).
    nodes.push(Node::new(STEP_DONE, "NoOp", cpu).inputs(&[&format!("^{table_opt}"), &format!("^{head_opt}")]).outputs(&[]));
    // The next step's lookup reads the table only after this step updated it.
    for (name, shape) in [("next_step/input/ids", [-1]), ("next_step/input/offsets", [batch])] {
        nodes.push(Node::new(name, "Placeholder", cpu).attr("dtype", dtype(DataType::DT_INT64)).attr("shape", shape_attr(&shape)).outputs(&[&shape]));
    }
    nodes.push(
        Node::new("next_step/bag_pool", "EmbeddingBag", cpu)
            .inputs(&["embedding/table", "next_step/input/ids", "next_step/input/offsets", &format!("^{table_opt}")])
            .attr("T", dtype(DataType::DT_FLOAT))
            .attr("pooling", string(&spec.pooling))
            .outputs(&[&[batch, dim]]),
    );
    // Evaluation reads the table and head as the step it reports left them.
    nodes.push(Node::new("eval/input", "Placeholder", cpu).attr("dtype", dtype(DataType::DT_STRING)).attr("shape", shape_attr(&[-1])).outputs(&[&[-1]]));
    let mut eval_inputs = vec!["embedding/table".to_string(), "eval/input".into()];
    eval_inputs.extend(head_params.iter().map(|(name, _)| name.clone()));
    eval_inputs.push(format!("^{STEP_DONE}"));
    nodes.push(Node::new("eval/evaluate", "Evaluate", dense).inputs(&eval_inputs.iter().map(String::as_str).collect::<Vec<_>>()).attr("T", dtype(DataType::DT_FLOAT)).outputs(&[
        &[],
        &[],
        &[],
    ]));

    let mut graph = GraphDef::new();
    graph.set_node(RepeatedField::from_vec(nodes.into_iter().map(|n| n.0).collect()));
    let mut versions = VersionDef::new();
    versions.set_producer(PRODUCER);
    graph.set_versions(versions);
    graph
}

/// Serializes `graph` with every attr map in key order.
///
/// protobuf 2 writes maps in `HashMap` order, which differs between two maps
/// even in one process; this keeps the bytes a function of the graph alone.
pub fn encode_graph(graph: &GraphDef) -> Vec<u8> {
    let mut out = Vec::new();
    let mut os = CodedOutputStream::vec(&mut out);
    for node in graph.get_node() {
        os.write_bytes(1, &encode_node(node)).expect("writing to a Vec cannot fail");
    }
    if graph.has_versions() {
        let versions = graph.get_versions().write_to_bytes().expect("VersionDef is always valid");
        os.write_bytes(4, &versions).expect("writing to a Vec cannot fail");
    }
    os.flush().expect("writing to a Vec cannot fail");
    drop(os);
    out
}

fn encode_node(node: &NodeDef) -> Vec<u8> {
    // Fields 1-4 through protobuf, then the attr map (field 5) by hand, sorted.
    let mut plain = node.clone();
    plain.clear_attr();
    let mut out = plain.write_to_bytes().expect("NodeDef is always valid");
    let mut attrs: Vec<_> = node.get_attr().iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    let mut os = CodedOutputStream::vec(&mut out);
    for (key, value) in attrs {
        let mut entry = Vec::new();
        let mut es = CodedOutputStream::vec(&mut entry);
        es.write_string(1, key).expect("writing to a Vec cannot fail");
        es.write_bytes(2, &value.write_to_bytes().expect("AttrValue is always valid")).expect("writing to a Vec cannot fail");
        es.flush().expect("writing to a Vec cannot fail");
        drop(es);
        os.write_bytes(5, &entry).expect("writing to a Vec cannot fail");
    }
    os.flush().expect("writing to a Vec cannot fail");
    drop(os);
    out
}

/// A NodeDef under construction.
struct Node(NodeDef);

impl Node {
    fn new(name: &str, op: &str, device: &str) -> Self {
        let mut node = NodeDef::new();
        node.set_name(name.to_string());
        node.set_op(op.to_string());
        node.set_device(device.to_string());
        Node(node)
    }
    fn inputs(mut self, inputs: &[&str]) -> Self {
        self.0.mut_input().extend(inputs.iter().map(|s| s.to_string()));
        self
    }
    fn attr(mut self, key: &str, value: AttrValue) -> Self {
        self.0.mut_attr().insert(key.to_string(), value);
        self
    }
    /// `_output_shapes`: what TensorBoard shows on edges and in the node info card.
    fn outputs(self, shapes: &[&[i64]]) -> Self {
        let mut list = AttrValue_ListValue::new();
        list.set_shape(shapes.iter().map(|s| shape(s)).collect());
        let mut value = AttrValue::new();
        value.set_list(list);
        self.attr("_output_shapes", value)
    }
}

fn variable(name: &str, dims: &[i64], device: &str) -> Node {
    Node::new(name, "VariableV2", device).attr("dtype", dtype(DataType::DT_FLOAT)).attr("shape", shape_attr(dims)).outputs(&[dims])
}

fn shape(dims: &[i64]) -> TensorShapeProto {
    let mut shape = TensorShapeProto::new();
    for &size in dims {
        let mut dim = TensorShapeProto_Dim::new();
        dim.set_size(size);
        shape.mut_dim().push(dim);
    }
    shape
}

fn shape_attr(dims: &[i64]) -> AttrValue {
    let mut value = AttrValue::new();
    value.set_shape(shape(dims));
    value
}

fn dtype(t: DataType) -> AttrValue {
    let mut value = AttrValue::new();
    value.set_field_type(t);
    value
}

fn string(s: &str) -> AttrValue {
    let mut value = AttrValue::new();
    value.set_s(s.as_bytes().to_vec());
    value
}

fn boolean(b: bool) -> AttrValue {
    let mut value = AttrValue::new();
    value.set_b(b);
    value
}

/// Node names for the two optimizers, distinct even when both use the same algorithm.
fn optimizer_names(table: &str, head: &str) -> (String, String) {
    let (table, head) = (node_name_part(table), node_name_part(head));
    if table == head {
        (format!("optimizer/{table}_table"), format!("optimizer/{head}_head"))
    } else {
        (format!("optimizer/{table}"), format!("optimizer/{head}"))
    }
}

/// TF node names allow `[A-Za-z0-9_.-]` within a scope.
fn node_name_part(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    if cleaned.is_empty() {
        "unnamed".into()
    } else {
        cleaned
    }
}

/// "lazy_adam" → "LazyAdam", the way TF spells op types.
fn camel_case(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect()
}
