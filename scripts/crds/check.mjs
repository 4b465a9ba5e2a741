// Validates custom resources offline against their CRDs' OpenAPI schemas, which
// kubernetes-validate does not know: reads `kubectl kustomize` output on stdin, checks every
// KEDA, Prometheus Operator and CloudNativePG object, and fails on any other resource of a
// non-Kubernetes API
// group (it would otherwise go unchecked). The schemas come from kubernetes-models, which
// generates them from each project's released CRDs.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as cnpg from "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "postgresql.cnpg.io/v1": cnpg,
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": monitoring,
};

let problems = 0;
let checked = 0;
for (const document of parseAllDocuments(readFileSync(0, "utf8"))) {
  if (document.errors.length > 0) {
    console.error(`unparseable YAML: ${document.errors[0].message}`);
    problems++;
    continue;
  }
  const object = document.toJS();
  if (!object) continue;
  const { apiVersion = "", kind = "" } = object;
  const group = apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
  const name = `${kind} ${object.metadata?.name ?? "(unnamed)"} (${apiVersion})`;
  if (!group.includes(".") || group.endsWith(".k8s.io")) continue; // kubernetes-validate's
  const Model = models[apiVersion]?.[kind];
  if (!Model) {
    console.error(`${name}: no schema for this custom resource`);
    problems++;
    continue;
  }
  try {
    new Model(object).validate();
    checked++;
  } catch (error) {
    console.error(`${name}: ${error.message}`);
    problems++;
  }
}
if (problems > 0) process.exit(1);
console.log(`${checked} custom resources valid`);
