//! The per-tensor types of every file type equal the ones llama.cpp's `llama_model_quantize`
//! chose on the same tensors (`tools/fixtures/quantize/mixes.json`, recorded by
//! `tools/scripts/gen_quantize_fixtures.py` from llama-cpp-python on two 16-layer llama-shaped
//! models: one with its own output.weight, one with tied embeddings), and the tensor order is
//! the one llama.cpp wrote.

use std::path::Path;

use lumen::kernels::GgmlType;
use lumen_tools::quantize::llama_order;
use lumen_tools::quantize::presets::{choose_types, FileType, ModelInfo, TensorDesc};
use serde_json::Value;

fn mixes() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quantize/mixes.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_file_type_picks_llama_cpp_s_tensor_types() {
    let m = mixes();
    let model = &m["model"];
    let info = ModelInfo {
        arch: model["arch"].as_str().unwrap().into(),
        n_layer: model["n_layer"].as_u64().unwrap() as usize,
        n_head: model["n_head"].as_u64().unwrap() as usize,
        n_head_kv: model["n_head_kv"].as_u64().unwrap() as usize,
        n_expert: 0,
    };
    let mut checked = 0;
    for (variant, v) in m["variants"].as_object().unwrap() {
        let tensors: Vec<(String, Vec<usize>)> = v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let shape = t["shape"].as_array().unwrap();
                let shape = shape.iter().map(|d| d.as_u64().unwrap() as usize).collect();
                (t["name"].as_str().unwrap().to_string(), shape)
            })
            .collect();
        let names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
        let order = llama_order(&names);
        let ordered: Vec<&str> = order.iter().map(|&i| names[i]).collect();
        assert_eq!(
            ordered,
            v["llama_order"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect::<Vec<_>>(),
            "{variant}: tensor order"
        );
        let descs: Vec<TensorDesc> = order
            .iter()
            .map(|&i| TensorDesc {
                name: &tensors[i].0,
                ty: GgmlType::F32,
                shape: &tensors[i].1,
            })
            .collect();
        // Recorded per file type: the type of every tensor, in the `tensors` order.
        for (ft_name, expected) in v["types"].as_object().unwrap() {
            let ft = FileType::parse(ft_name).unwrap();
            let got = choose_types(&descs, ft, &info, &Default::default()).unwrap();
            for (&i, ty) in order.iter().zip(got) {
                let want = expected[i].as_str().unwrap();
                assert_eq!(ty.name(), want, "{variant} {ft_name}: {}", tensors[i].0);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 17, "file types × variants");
}
