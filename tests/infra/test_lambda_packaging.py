"""The SAM template and the Dockerfile: linted by cfn-lint and hadolint, and consistent with the
code they start (handler paths, entry script, pins, the warm-up payload)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from runtime.aws.events import EventKind, WarmupSource, classify

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A linter installed by `make setup` (requirements-dev.txt) beside this interpreter."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: run `make setup`"
    return found


def entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "thaw_entrypoint", ROOT / "infra" / "docker" / "entrypoint.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function() -> Any:
    return cfn_yaml.load(str(TEMPLATE))["Resources"]["ThawFunction"]


def test_the_sam_template_passes_cfn_lint() -> None:
    result = subprocess.run(
        [tool("cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_builds_this_dockerfile_and_starts_this_handler() -> None:
    resource = function()
    metadata, props = resource["Metadata"], resource["Properties"]
    assert props["PackageType"] == "Image"
    assert (ROOT / metadata["DockerContext"] / metadata["Dockerfile"]).resolve() == DOCKERFILE
    assert metadata["DockerBuildArgs"]["TORCH_VARIANT"] == "cpu"  # Lambda has no GPU
    assert props["ImageConfig"]["Command"] == [entrypoint().LAMBDA_HANDLER]


def test_the_url_is_signed_by_default_and_targets_the_alias() -> None:
    template = cfn_yaml.load(str(TEMPLATE))
    props = function()["Properties"]
    assert template["Parameters"]["AuthType"]["Default"] == "AWS_IAM"
    assert props["FunctionUrlConfig"]["AuthType"] == {"Ref": "AuthType"}
    assert props["AutoPublishAlias"] == "live"
    assert template["Parameters"]["ProvisionedConcurrency"]["Default"] == 0


def test_the_scheduled_payload_is_a_thaw_warmup() -> None:
    schedule = function()["Properties"]["Events"]["Warmup"]
    assert schedule["Type"] == "ScheduleV2"
    payload = schedule["Properties"]["Input"]["Fn::Sub"].replace("${WarmupConcurrency}", "4")
    classified = classify(json.loads(payload))
    assert classified.kind is EventKind.WARMUP
    assert classified.warmup is not None
    assert classified.warmup.source is WarmupSource.THAW
    assert classified.warmup.concurrency == 4


def test_the_function_may_invoke_itself_for_fan_out_and_job_workers() -> None:
    props = function()["Properties"]
    statements = props["Policies"][0]["Statement"]
    fan_out = next(s for s in statements if s["Sid"] == "InvokeSelf")
    assert fan_out["Action"] == "lambda:InvokeFunction"
    name = props["FunctionName"]["Fn::Sub"]
    assert all(name in resource["Fn::Sub"] for resource in fan_out["Resource"])


def test_the_role_is_least_privilege() -> None:
    """The role may invoke only this function (fan-out, job workers), read only the model bucket
    when one is given, read and write objects only under the jobs bucket's `jobs/` prefix, and
    write logs (SAM's basic execution role): no wildcard action or resource."""
    template = cfn_yaml.load(str(TEMPLATE))
    props = function()["Properties"]
    assert "Role" not in props  # SAM makes the role from `Policies` (plus basic logging)
    inline, conditional = props["Policies"]
    for statement in inline["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert all("*" not in action for action in actions), statement
        assert statement["Resource"] != "*"
        resource = json.dumps(statement["Resource"]).replace(":*", "")
        assert "*" not in resource.replace("${JobsBucket.Arn}/jobs/*", "")
    assert {s["Sid"] for s in inline["Statement"]} == {"InvokeSelf", "JobObjects", "JobBucketList"}
    condition, when_given, otherwise = conditional["Fn::If"]
    assert template["Conditions"][condition]  # only with a ModelBucket parameter
    assert list(when_given) == ["S3ReadPolicy"]
    assert when_given["S3ReadPolicy"] == {"BucketName": {"Ref": "ModelBucket"}}
    assert otherwise == {"Ref": "AWS::NoValue"}
    resources = template["Resources"]
    assert not [name for name, r in resources.items() if r["Type"] == "AWS::IAM::Policy"]


def test_the_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile(), flags=re.MULTILINE)
    assert users, "the Dockerfile sets no USER"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0")
    assert int(final) >= 1000


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_the_entry_script_and_the_modules_it_starts_exist() -> None:
    text = dockerfile()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    script = Path(entry[1])
    assert script.parts[:2] == ("/", "app")
    assert (ROOT / Path(*script.parts[2:])).is_file()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    module_name, _, attribute = cmd[0].rpartition(".")
    spec = importlib.util.find_spec(module_name)
    assert spec is not None
    assert spec.origin is not None
    # Importing the handler module would run Lambda INIT; read its top level instead.
    tree = ast.parse(Path(spec.origin).read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert attribute in assigned
    module = entrypoint()
    for name in (module.LAMBDA_CLIENT_MODULE, f"{module.SERVER_MODULE}.__main__"):
        assert importlib.util.find_spec(name) is not None, name


def test_every_copied_path_exists() -> None:
    for source in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile(), re.M):
        assert (ROOT / source).exists(), source


def test_the_pins_match_the_requirements() -> None:
    text = dockerfile()
    runtime_pins = (ROOT / "requirements.txt").read_text()
    dev_pins = (ROOT / "requirements-dev.txt").read_text()
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert f"torch=={torch}\n" in runtime_pins
    client = re.search(r"awslambdaric==(\S+)", text).group(1)  # type: ignore[union-attr]
    assert f"awslambdaric=={client}\n" in dev_pins


def test_bytecode_is_compiled_at_build_for_a_read_only_filesystem() -> None:
    text = dockerfile()
    assert "python -m compileall" in text
    assert "--invalidation-mode unchecked-hash" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text


@pytest.mark.parametrize(
    ("environ", "args", "expected"),
    [
        (
            {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"},
            [],
            ["awslambdaric", "handler.lambda_function.handler"],
        ),
        (
            {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"},
            ["pkg.mod.fn"],
            ["awslambdaric", "pkg.mod.fn"],
        ),
        ({}, ["handler.lambda_function.handler"], ["handler"]),
        ({"AWS_LAMBDA_RUNTIME_API": ""}, [], ["handler"]),
    ],
)
def test_the_entry_script_chooses_lambda_or_uvicorn(
    environ: dict[str, str], args: list[str], expected: list[str]
) -> None:
    argv = entrypoint().command(environ, args)
    assert argv[:2] == [sys.executable, "-m"]
    assert argv[2:] == expected


def stages(text: str) -> list[tuple[str, str | None]]:
    """The Dockerfile's stages in order: (base, name or None)."""
    found = re.findall(r"^FROM\s+(?:--\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", text, re.M | re.I)
    return [(base, name or None) for base, name in found]


def test_the_template_and_the_dockerfile_stages_agree() -> None:
    """SAM builds `DockerContext`/`Dockerfile` with `DockerBuildArgs` (and `DockerBuildTarget`,
    else the last stage): that stage must be the one Lambda can start, every build argument must
    be one the Dockerfile declares, and every stage a COPY takes from must come before it."""
    metadata = function()["Metadata"]
    text = dockerfile()
    declared = set(re.findall(r"^ARG\s+([A-Z_]+)", text, re.M))
    assert set(metadata["DockerBuildArgs"]) <= declared
    assert metadata["DockerBuildArgs"]["BAKE_MODEL"] in ("tiny", "none")
    found = stages(text)
    names = [name for _, name in found]
    target = metadata.get("DockerBuildTarget")
    index = names.index(target) if target else len(found) - 1
    final = re.split(r"^FROM\s", text, flags=re.M)[index + 1]
    assert re.search(r"^ENTRYPOINT ", final, re.M)
    assert re.search(r"^USER 10001", final, re.M)
    for position, part in enumerate(re.split(r"^FROM\s", text, flags=re.M)[1:]):
        for source in re.findall(r"^COPY --from=(\S+) ", part, re.M):
            assert source in names[:position], f"stage {position} copies from {source}"
        base = found[position][0]
        assert base in ("${PYTHON_IMAGE}", *names[:position]), base
    # Every COPY source is in the context SAM sends.
    context = (ROOT / metadata["DockerContext"]).resolve()
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (context / source).exists(), source


def test_layers_go_from_least_to_most_often_changed() -> None:
    """The final stage is the requirements' stage, then copies AWS's emulator (its pin changes
    seldom), the weights, then the code: a code change rebuilds one layer of under a megabyte,
    not the 1.3 GB virtual environment."""
    final = re.split(r"^FROM\s", dockerfile(), flags=re.M)[-1]
    assert final.split()[0] == "venv"
    copies = re.findall(r"^COPY --from=\S+ (\S+) ", final, re.M)
    assert copies == ["/usr/local/bin/aws-lambda-rie", "/opt/thaw/model", "/app"]
    weights = re.split(r"^FROM\s", dockerfile(), flags=re.M)
    weights_stage = next(part for part in weights if re.match(r"\S+ AS weights", part))
    # The weights stage takes the model script alone, so no other code change rebuilds them.
    assert re.findall(r"^COPY (\S+) ", weights_stage, re.M) == ["infra/scripts/build_tiny_model.py"]


def test_bytecode_skips_only_the_one_file_python_311_cannot_compile() -> None:
    excluded = re.findall(r"-x '([^']+)'", dockerfile())
    assert len(excluded) == 1
    pattern = re.compile(excluded[0])
    site = "/opt/venv/lib/python3.11/site-packages/"
    assert pattern.search(site + "torch/testing/_internal/py312_intrinsics.py")
    for kept in (
        "torch/testing/_internal/common_utils.py",
        "torch/testing/_internal/py312_intrinsics_test.py",
        "torch/__init__.py",
    ):
        assert not pattern.search(site + kept), kept


def test_the_torch_index_is_a_build_argument_defaulting_to_pytorch() -> None:
    text = dockerfile()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text


SUPERVISED = """
import sys
sys.path.insert(0, {folder!r})
import entrypoint
sys.exit(entrypoint.supervise([sys.executable, "-c", {child!r}]))
"""


def supervised(child: str) -> subprocess.Popen[bytes]:
    code = SUPERVISED.format(folder=str(ROOT / "infra" / "docker"), child=child)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_the_entry_script_as_init_passes_sigterm_on_and_exits_as_the_child_did() -> None:
    """PID 1 in a container ignores signals it has no handler for; awslambdaric installs none.
    The entry script, as PID 1, runs it as a child and passes SIGTERM on (`docker stop`)."""
    proc = supervised("import sys, time; print('up', flush=True); time.sleep(60)")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    done = supervised("import sys; sys.exit(3)")
    assert done.wait(10) == 3
    assert done.stdout is not None
    done.stdout.close()


# -- SnapStart: the parameter and the combinations the template refuses ----------------------------


def _evaluate(expression: Any, parameters: dict[str, str]) -> Any:
    """The condition functions CloudFormation's `Rules` use, over string parameter values."""
    if isinstance(expression, dict):
        [(name, value)] = expression.items()
        if name == "Ref":
            return parameters[value]
        args = [_evaluate(arg, parameters) for arg in value]
        if name == "Fn::Equals":
            return str(args[0]) == str(args[1])
        if name == "Fn::Not":
            return not args[0]
        if name == "Fn::And":
            return all(args)
        if name == "Fn::Or":
            return any(args)
        if name == "Fn::Contains":
            return str(args[1]) in [str(item) for item in args[0]]
        raise AssertionError(f"unexpected rule function {name}")
    return expression


def refused(**chosen: str) -> list[str]:
    """The `AssertDescription`s of every rule the chosen parameters break (defaults elsewhere)."""
    template = cfn_yaml.load(str(TEMPLATE))
    parameters = {
        name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
    }
    parameters.update(chosen)
    broken = []
    for rule in template.get("Rules", {}).values():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], parameters):
            continue
        for assertion in rule["Assertions"]:
            if not _evaluate(assertion["Assert"], parameters):
                broken.append(assertion["AssertDescription"])
    return broken


def test_snapstart_is_off_by_default_and_applies_to_published_versions() -> None:
    template = cfn_yaml.load(str(TEMPLATE))
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["Default"] == "None"
    assert parameter["AllowedValues"] == ["None", "PublishedVersions"]
    condition, when_on, otherwise = function()["Properties"]["SnapStart"]["Fn::If"]
    assert template["Conditions"][condition] == {
        "Fn::Equals": [{"Ref": "SnapStart"}, "PublishedVersions"]
    }
    assert when_on == {"ApplyOn": "PublishedVersions"}
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert refused() == []


def test_snapstart_is_refused_with_provisioned_concurrency() -> None:
    assert refused(SnapStart="PublishedVersions", EphemeralStorage="512") == []
    [message] = refused(
        SnapStart="PublishedVersions", EphemeralStorage="512", ProvisionedConcurrency="2"
    )
    assert "provisioned concurrency" in message
    assert refused(ProvisionedConcurrency="2") == []


def test_snapstart_is_refused_with_more_than_512_mb_of_ephemeral_storage() -> None:
    [message] = refused(SnapStart="PublishedVersions")  # the default /tmp is 4096 MB
    assert "512" in message
    assert refused(SnapStart="PublishedVersions", EphemeralStorage="512") == []


def test_under_snapstart_the_snapshot_holds_a_warmed_model() -> None:
    variables = function()["Properties"]["Environment"]["Variables"]
    condition, on, off = variables["THAW_WARM_INFERENCE"]["Fn::If"]
    assert condition == "HasSnapStart"
    assert (on, off) == ("1", "0")


def test_the_image_bundles_the_emulator_the_tests_run() -> None:
    """The image's AWS emulator is the one the host tests run (tests/support/rie.py): the same
    aws-sam-cli pin and wheel hash, checked in the build before the binary is taken."""
    from tests.support import rie

    text = dockerfile()
    assert re.search(rf"^ARG SAM_CLI_VERSION={re.escape(rie.SAM_CLI_VERSION)}$", text, re.M)
    assert re.search(rf"^ARG SAM_CLI_SHA256={rie.WHEEL_SHA256}$", text, re.M)
    assert "sha256sum --check --strict" in text
    assert "--no-deps" in text.split("FROM venv AS rie")[1].split("FROM ")[0]


# -- Asynchronous jobs: the bucket, its lifecycle, the function's settings ----------------------


def test_the_jobs_bucket_is_private_encrypted_and_tls_only() -> None:
    resources = cfn_yaml.load(str(TEMPLATE))["Resources"]
    bucket = resources["JobsBucket"]["Properties"]
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    [deny] = resources["JobsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_lifecycle_rule_keeps_every_result_at_least_its_ttl_and_less_than_a_day_more() -> None:
    template = cfn_yaml.load(str(TEMPLATE))
    parameter = template["Parameters"]["JobTtlHours"]
    table = template["Mappings"]["JobTtl"]
    assert sorted(table, key=int) == parameter["AllowedValues"]
    assert parameter["Default"] in parameter["AllowedValues"]
    for hours, entry in table.items():
        seconds = int(entry["Seconds"])
        assert seconds == int(hours) * 3600
        assert entry["Days"] == -(-seconds // 86_400)  # whole days, rounded up
    [rule] = template["Resources"]["JobsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "jobs/"
    assert rule["ExpirationInDays"] == {"Fn::FindInMap": ["JobTtl", {"Ref": "JobTtlHours"}, "Days"]}
    variables = function()["Properties"]["Environment"]["Variables"]
    assert variables["THAW_JOB_TTL_S"] == {
        "Fn::FindInMap": ["JobTtl", {"Ref": "JobTtlHours"}, "Seconds"]
    }


def test_the_function_keeps_jobs_under_the_prefix_its_role_may_write() -> None:
    from runtime.settings import Settings

    props = function()["Properties"]
    url = props["Environment"]["Variables"]["THAW_JOBS_URL"]["Fn::Sub"]
    assert url == "s3://${JobsBucket}/jobs"
    settings = Settings.from_env({"THAW_JOBS_URL": url.replace("${JobsBucket}", "b")})
    assert settings.jobs_url == "s3://b/jobs"
    [objects] = [s for s in props["Policies"][0]["Statement"] if s["Sid"] == "JobObjects"]
    assert objects["Resource"] == {"Fn::Sub": "${JobsBucket.Arn}/jobs/*"}
    assert sorted(objects["Action"]) == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    invoke = props["EventInvokeConfig"]
    assert invoke["MaximumEventAgeInSeconds"] == {"Ref": "JobStartTimeout"}
    assert props["Environment"]["Variables"]["THAW_QUEUE_TIMEOUT_S"] == {"Ref": "JobStartTimeout"}
