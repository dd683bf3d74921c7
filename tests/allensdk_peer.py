"""Runs inside the AllenSDK 2.16.2 venv (.venv-allensdk), never in ours: AllenSDK as a peer reader and downloader.

    python allensdk_peer.py read CACHE_DIR              what from_local_cache sees in a cache (JSON)
    python allensdk_peer.py download CACHE_DIR N        from_s3_cache: tables and the first N experiment files
                                                        (AWS_ENDPOINT_URL_S3 sends requests to a test server)
"""

import json
import sys
import warnings

warnings.simplefilter("ignore")

from allensdk.brain_observatory.behavior.behavior_project_cache import (  # noqa: E402
    VisualBehaviorOphysProjectCache,
)


def describe(cache, n_files, download):
    experiments = cache.get_ophys_experiment_table()
    cache.get_ophys_session_table()
    cache.get_behavior_session_table()
    files = {}
    cloud_cache = cache.fetch_api.cache
    for experiment_id, row in experiments.sort_values("file_id").head(n_files).iterrows():
        file_id = str(int(row.file_id))
        if download:
            files[str(experiment_id)] = str(cloud_cache.download_data(file_id))
        else:  # offline: where AllenSDK expects the file, and whether it is there
            where = cloud_cache.data_path(file_id)
            files[str(experiment_id)] = str(where["local_path"]) if where["exists"] else None
    return {
        "manifest": cache.current_manifest(),
        "experiment_ids": sorted(int(i) for i in experiments.index),
        "files": files,
    }


if __name__ == "__main__":
    command, cache_dir = sys.argv[1], sys.argv[2]
    if command == "read":
        project_cache = VisualBehaviorOphysProjectCache.from_local_cache(cache_dir=cache_dir)
        result = describe(project_cache, n_files=10**6, download=False)
    else:
        project_cache = VisualBehaviorOphysProjectCache.from_s3_cache(cache_dir=cache_dir)
        result = describe(project_cache, n_files=int(sys.argv[3]), download=True)
    print(json.dumps(result))
