//! Summaries for TensorBoard's HParams dashboard, laid out as
//! `tensorboard.plugins.hparams.summary_v2` writes them.

use protobuf::well_known_types::Value;
use protobuf::{Message, RepeatedField};
use tensorboard_proto::api::{DataType, Experiment, HParamInfo, MetricInfo, MetricName, Status};
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType as TensorDataType;

pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_INFO_TAG: &str = "_hparams_/session_end_info";

/// One hyperparameter value, as the HParams dashboard types them.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl From<&str> for HParamValue {
    fn from(s: &str) -> Self {
        HParamValue::Str(s.to_string())
    }
}
impl From<String> for HParamValue {
    fn from(s: String) -> Self {
        HParamValue::Str(s)
    }
}
impl From<f64> for HParamValue {
    fn from(x: f64) -> Self {
        HParamValue::Num(x)
    }
}
impl From<bool> for HParamValue {
    fn from(b: bool) -> Self {
        HParamValue::Bool(b)
    }
}

impl HParamValue {
    fn to_proto(&self) -> Value {
        let mut value = Value::new();
        match self {
            HParamValue::Str(s) => value.set_string_value(s.clone()),
            HParamValue::Num(x) => value.set_number_value(*x),
            HParamValue::Bool(b) => value.set_bool_value(*b),
        }
        value
    }
    fn data_type(&self) -> DataType {
        match self {
            HParamValue::Str(_) => DataType::DATA_TYPE_STRING,
            HParamValue::Num(_) => DataType::DATA_TYPE_FLOAT64,
            HParamValue::Bool(_) => DataType::DATA_TYPE_BOOL,
        }
    }
}

/// `_hparams_/session_start_info`: this run's values. `group_name` makes the run its own row.
pub fn session_start(hparams: &[(String, HParamValue)], group_name: &str, start_time_secs: f64) -> Summary {
    let mut info = SessionStartInfo::new();
    for (name, value) in hparams {
        info.mut_hparams().insert(name.clone(), value.to_proto());
    }
    info.set_group_name(group_name.to_string());
    info.set_start_time_secs(start_time_secs);
    let mut data = HParamsPluginData::new();
    data.set_session_start_info(info);
    summary(SESSION_START_INFO_TAG, &data)
}

/// `_hparams_/experiment`: which hparams and metrics the dashboard's table shows.
/// No domains: a discrete domain from one run would hide the other runs' values.
pub fn experiment(hparams: &[(String, HParamValue)], metric_tags: &[&str], time_created_secs: f64) -> Summary {
    let mut experiment = Experiment::new();
    experiment.set_time_created_secs(time_created_secs);
    experiment.set_hparam_infos(RepeatedField::from_vec(
        hparams
            .iter()
            .map(|(name, value)| {
                let mut info = HParamInfo::new();
                info.set_name(name.clone());
                info.set_field_type(value.data_type());
                info
            })
            .collect(),
    ));
    experiment.set_metric_infos(RepeatedField::from_vec(
        metric_tags
            .iter()
            .map(|tag| {
                // group "" = the scalar lives in the session's own run folder.
                let mut name = MetricName::new();
                name.set_tag(tag.to_string());
                let mut info = MetricInfo::new();
                info.set_name(name);
                info
            })
            .collect(),
    ));
    let mut data = HParamsPluginData::new();
    data.set_experiment(experiment);
    summary(EXPERIMENT_TAG, &data)
}

/// `_hparams_/session_end_info`.
pub fn session_end(status: Status, end_time_secs: f64) -> Summary {
    let mut info = SessionEndInfo::new();
    info.set_status(status);
    info.set_end_time_secs(end_time_secs);
    let mut data = HParamsPluginData::new();
    data.set_session_end_info(info);
    summary(SESSION_END_INFO_TAG, &data)
}

fn summary(tag: &str, data: &HParamsPluginData) -> Summary {
    let mut data = data.clone();
    data.set_version(0);
    let mut plugin = SummaryMetadata_PluginData::new();
    plugin.set_plugin_name("hparams".to_string());
    plugin.set_content(data.write_to_bytes().expect("HParamsPluginData is always valid"));
    let mut metadata = SummaryMetadata::new();
    metadata.set_plugin_data(plugin);

    let mut value = Summary_Value::new();
    value.set_tag(tag.to_string());
    value.set_metadata(metadata);
    // TensorBoard drops a plugin summary without a tensor; this is its
    // `metadata.NULL_TENSOR`: an empty float tensor of shape [0].
    value.set_tensor(null_tensor());
    let mut summary = Summary::new();
    summary.mut_value().push(value);
    summary
}

fn null_tensor() -> TensorProto {
    let mut shape = TensorShapeProto::new();
    shape.mut_dim().push(TensorShapeProto_Dim::new());
    let mut tensor = TensorProto::new();
    tensor.set_dtype(TensorDataType::DT_FLOAT);
    tensor.set_tensor_shape(shape);
    tensor
}
