# Sourced by the scripts here: python packages the device image lacks, from the carried wheels.
#
#   install_carried WHEELS MODULE...   install WHEELS/*.whl (and pesq's sdist, built offline, when pesq is
#                                      among the MODULEs) into /tmp/audiokit-site, put it on PYTHONPATH and
#                                      its bin/ on PATH
#   stub_pesq                          a stand-in pesq that raises when called, so that modules importing
#                                      it (audiokit.metrics) load without the real one
install_carried() {
    local wheels=$1 site=/tmp/audiokit-site
    shift
    mkdir -p "$site"
    if ls "$wheels"/*.whl >/dev/null 2>&1; then
        $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$wheels"/*.whl || echo "installing the carried wheels failed" >&2
    fi
    if [[ " $* " == *" pesq "* ]] && ls "$wheels"/pesq-*.tar.gz >/dev/null 2>&1; then
        # pesq has no wheels: build its sdist offline (its setup_requires names pytest-runner, not needed)
        rm -rf /tmp/pesq-src && mkdir -p /tmp/pesq-src && tar xzf "$wheels"/pesq-*.tar.gz -C /tmp/pesq-src
        sed -i "s/, *'pytest-runner'//" /tmp/pesq-src/pesq-*/setup.py
        $PYTHON -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
            --target "$site" /tmp/pesq-src/pesq-*/ || echo "building pesq failed" >&2
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
}

stub_pesq() {
    mkdir -p /tmp/audiokit-stub/pesq
    printf '%s\n' '"""Stand-in from recipes/gpu/carried.sh: the real pesq is not installed."""' \
        'def pesq(*args, **kwargs):' '    raise RuntimeError("pesq is not installed on this machine")' \
        >/tmp/audiokit-stub/pesq/__init__.py
    export PYTHONPATH="/tmp/audiokit-stub${PYTHONPATH:+:$PYTHONPATH}"
}
