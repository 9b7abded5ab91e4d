<#
.SYNOPSIS
Runs one sample task in the executor image, hardened the way a Job runs it (Windows / PowerShell
counterpart of scripts/run-docker.sh).

.DESCRIPTION
Builds the executor image first (with images/multistage/Dockerfile, so no Rust is needed on this
machine; the first build takes several minutes) unless -SkipBuild, then runs the scenario's sample
module with a read-only root, no network, uid 65532, a memory limit, no capabilities and
no-new-privileges. The module and input are mounted read-only; the result file lands in
host\shared. The container's last output line is the result document; the script exits with the
executor's exit code.

.EXAMPLE
scripts\run-docker.ps1 -Scenario fib
.EXAMPLE
$env:CONTAINER_ENGINE = 'podman'; scripts\run-docker.ps1 -Scenario affine -SkipBuild
#>
param(
    [ValidateSet('add', 'fib', 'affine')]
    [string]$Scenario = $(if ($env:SCENARIO) { $env:SCENARIO } else { 'add' }),
    [switch]$SkipBuild = ($env:SKIP_BUILD -eq '1'),
    [string]$Engine = $(if ($env:CONTAINER_ENGINE) { $env:CONTAINER_ENGINE } else { 'docker' }),
    [string]$Image = $(if ($env:IMAGE) { $env:IMAGE } else { 'executor-demo/executor:demo' }),
    [string]$Memory = '512m',
    [int]$MaxMemoryMb = 256,
    [string]$ResultFile = 'result.txt'
)
$ErrorActionPreference = 'Stop'
$root = (Resolve-Path (Join-Path $PSScriptRoot '..')).Path

$samples = @{
    add    = @{ Wasm = 'host\wasm\add.wasm'; Input = $null }
    fib    = @{ Wasm = 'host\wasm\fib.wasm'; Input = 'testdata\input\fib.json' }
    affine = @{ Wasm = 'host\wasm\affine.wasm'; Input = 'testdata\input\affine.json' }
}
$wasm = Join-Path $root $samples[$Scenario].Wasm

if (-not $SkipBuild) {
    Write-Host "run-docker: building $Image with images/multistage/Dockerfile ($Engine)"
    & $Engine build -f (Join-Path $root 'images\multistage\Dockerfile') --target executor -t $Image $root
    if ($LASTEXITCODE -ne 0) { throw "run-docker: image build failed ($LASTEXITCODE)" }
}

$shared = Join-Path $root 'host\shared'
New-Item -ItemType Directory -Force -Path $shared | Out-Null
Remove-Item -Force -ErrorAction SilentlyContinue (Join-Path $shared $ResultFile)

$runArgs = @(
    'run', '--rm',
    '--read-only', '--network', 'none',
    '--user', '65532:65532',
    '--memory', $Memory, '--memory-swap', $Memory,
    '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
    '--mount', "type=bind,source=$wasm,target=/mnt/wasm/module.wasm,readonly",
    '--mount', "type=bind,source=$shared,target=/mnt/shared",
    '-e', 'WASM_PATH=/mnt/wasm/module.wasm',
    '-e', "OUTPUT_PATH=/mnt/shared/$ResultFile",
    '-e', "MAX_MEMORY_MB=$MaxMemoryMb"
)
if ($samples[$Scenario].Input) {
    $inputFile = Join-Path $root $samples[$Scenario].Input
    $runArgs += @('--mount', "type=bind,source=$inputFile,target=/mnt/input/input.json,readonly",
        '-e', 'INPUT_PATH=/mnt/input/input.json')
}
$runArgs += $Image

Write-Host "run-docker: $Scenario in $Image ($Engine, --memory $Memory)"
& $Engine @runArgs
$code = $LASTEXITCODE
Write-Host "run-docker: exit $code; result file host\shared\$ResultFile"
exit $code
