// Pre-generated with tonic-prost-build 0.14.9 / protoc 36.2 from etcd-client 0.21.1's proto/.
// Copies them to OUT_DIR so src/rpc/pb.rs's tonic::include_proto! works unchanged. No protoc needed.
fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    for f in ["authpb", "etcdserverpb", "mvccpb", "v3electionpb", "v3lockpb"] {
        let src = format!("generated/{f}.rs");
        println!("cargo:rerun-if-changed={src}");
        std::fs::copy(&src, out.join(format!("{f}.rs"))).unwrap();
    }
}
