"""Scene I/O: reading rasters and scene folders, writing outputs.

- :mod:`~sarvessel.runtime.io.raster`: windowed reads of big (Geo)TIFFs with tifffile;
- :mod:`~sarvessel.runtime.io.geotiff`: georeferencing tags, a minimal GeoTIFF writer;
- :mod:`~sarvessel.runtime.io.scene`: an xView3 scene folder (or one multi-band GeoTIFF) as
  bands read by rows, with its land mask and pixel-to-lon/lat transform;
- :mod:`~sarvessel.runtime.io.outputs`: submission CSV, GeoJSON, quicklook PNG, JSON (no NaN),
  atomic writes, output path checks; :mod:`~sarvessel.runtime.io.output_set`: a scene's outputs
  committed as one set (summary last) and read back checked;
- :mod:`~sarvessel.runtime.io.tables` and :mod:`~sarvessel.runtime.io.xview3_csv`: CSV tables
  and the xView3 label/prediction format.

Runs on the board and on the ground (numpy, tifffile, Pillow).
"""
