//! `crdgen`: prints the `LogCluster` CustomResourceDefinition as YAML (committed as
//! `crds/logcluster.yaml`; a test fails when the two differ).

fn main() -> anyhow::Result<()> {
    print!("{}", logcluster_operator::crd::crd_yaml()?);
    Ok(())
}
