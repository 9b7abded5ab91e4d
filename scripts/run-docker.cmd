@echo off
rem Runs one sample task in the executor image (Windows), as in the seed:
rem   scripts\run-docker.cmd SCENARIO=add^|fib^|affine [SKIP_BUILD=1] [CONTAINER_ENGINE=podman]
rem The same names are read from the environment. All the work is done by run-docker.ps1.
setlocal
:args
if "%~1"=="" goto run
rem cmd splits SCENARIO=fib into two arguments, SCENARIO and fib.
if /i "%~1"=="SCENARIO" (set "SCENARIO=%~2" & shift & shift & goto args)
if /i "%~1"=="SKIP_BUILD" (set "SKIP_BUILD=%~2" & shift & shift & goto args)
if /i "%~1"=="CONTAINER_ENGINE" (set "CONTAINER_ENGINE=%~2" & shift & shift & goto args)
if /i "%~1"=="IMAGE" (set "IMAGE=%~2" & shift & shift & goto args)
echo usage: %~nx0 SCENARIO=add^|fib^|affine [SKIP_BUILD=1] [CONTAINER_ENGINE=docker^|podman] [IMAGE=name:tag] 1>&2
exit /b 2
:run
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0run-docker.ps1"
exit /b %ERRORLEVEL%
