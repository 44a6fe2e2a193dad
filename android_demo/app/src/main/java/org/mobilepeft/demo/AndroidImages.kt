package org.mobilepeft.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import java.io.File
import org.mobilepeft.core.DataError
import org.mobilepeft.core.FolderDataset
import org.mobilepeft.core.Image

/**
 * Decodes a photo for the core as the SDK decodes it with PIL (`convert("RGB")`): 8-bit RGB,
 * alpha dropped without premultiplying, no EXIF rotation (PIL applies none either). The size is
 * read first, so an image over the SDK's pixel limit is refused before it is decoded.
 * UNVERIFIED: that libjpeg on a device decodes JPEGs to the same bytes as PIL's (PNGs are lossless).
 */
object AndroidImages {
    fun decode(file: File): Image {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        BitmapFactory.decodeFile(file.path, bounds)
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw DataError("'${file.path}' is not an image file Android can decode (PNG, JPEG, ...)")
        FolderDataset.checkSize(file, bounds.outWidth, bounds.outHeight)
        val opts = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false
        }
        val bmp = BitmapFactory.decodeFile(file.path, opts) ?: throw DataError("cannot decode image '${file.path}'")
        val w = bmp.width
        val h = bmp.height
        val px = IntArray(w * h)
        bmp.getPixels(px, 0, w, 0, 0, w, h)
        bmp.recycle()
        val rgb = ByteArray(3 * w * h)
        for (i in 0 until w * h) {
            rgb[3 * i] = (px[i] shr 16).toByte()
            rgb[3 * i + 1] = (px[i] shr 8).toByte()
            rgb[3 * i + 2] = px[i].toByte()
        }
        return Image.fromBytes(h, w, 3, rgb)
    }
}
