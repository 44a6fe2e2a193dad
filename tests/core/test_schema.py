"""The published JSON Schema is generated from the same declared types the validator checks: it is
up to date, accepts every valid manifest, and agrees with the validator on mutated ones."""

import json

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobile_peft.bench.fuzz import mutated
from mobile_peft.core import schema
from mobile_peft.core.manifest import manifest_problems
from mobile_peft.core.samples import sample_manifest

VALIDATOR = jsonschema.Draft202012Validator(json.loads(schema.SCHEMA_FILE.read_text()))


def test_the_published_schema_is_up_to_date():
    assert schema.main(["--check"]) == 0
    jsonschema.Draft202012Validator.check_schema(schema.manifest_schema())


def test_valid_manifests_pass_the_schema():
    for fmt in ("pte", "onnx", "coreml"):
        assert list(VALIDATOR.iter_errors(sample_manifest(fmt))) == []


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.sampled_from(["pte", "onnx"]).map(sample_manifest).flatmap(mutated))
def test_whatever_the_schema_refuses_the_validator_refuses(manifest):
    if list(VALIDATOR.iter_errors(manifest)):
        assert manifest_problems(manifest), "the schema found a problem the validator missed"
