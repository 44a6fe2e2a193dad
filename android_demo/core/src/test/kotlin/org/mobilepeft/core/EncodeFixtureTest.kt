package org.mobilepeft.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test

/** Image and text encoding against fixtures/{encode.json, encode_pixels.f32} (the SDK's Encoder). */
class EncodeFixtureTest {
    private val fx = Fixtures.json("encode.json")
    private val manifest = Manifest.validateBundle(Fixtures.file("bundle"))
    private val tokenizer = WordLevelTokenizer.load(File(Fixtures.file("bundle"), manifest.inputSpec.tokenizerFile))
    private val encoder = Encoder(manifest.inputSpec, tokenizer)
    private val pixels: FloatArray = Fixtures.file("encode_pixels.f32").readBytes().let { b ->
        FloatArray(b.size / 4).also { ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(it) }
    }

    /** A PNG decoded as PIL decodes it for the SDK: grey stays one channel, anything else RGB. */
    private fun decodePng(file: File): Image {
        val img = ImageIO.read(file) ?: error("cannot decode $file")
        val raster = img.raster
        val grey = raster.numBands == 1
        val c = if (grey) 1 else 3
        val bytes = ByteArray(img.height * img.width * c)
        for (y in 0 until img.height) for (x in 0 until img.width) for (b in 0 until c) {
            bytes[(y * img.width + x) * c + b] = raster.getSample(x, y, b).toByte()
        }
        return Image.fromBytes(img.height, img.width, c, bytes)
    }

    private fun imageOf(case: Map<*, *>): Image {
        case["file"]?.let { return decodePng(Fixtures.file(it.str())) }
        val h = case["height"].int()
        val w = case["width"].int()
        val c = case["channels"].int()
        return if (case["dtype"] == "uint8") {
            Image.fromBytes(h, w, c, case["values"].ints().map { it.toByte() }.toByteArray())
        } else {
            Image.fromFloats(h, w, c, case["values"].floats())
        }
    }

    @Test
    fun imagesEncodeBitForBit() {
        for (case in fx["images"].list()) {
            val c = case.obj()
            val n = c["shape"].ints().reduce(Int::times)
            val offset = c["offset"].int()
            val expected = pixels.copyOfRange(offset, offset + n)
            val actual = encoder.image(imageOf(c))
            assertClose(expected, actual, "image ${c["name"]}")
            assertBitIdentical(expected, actual, "image ${c["name"]}")
        }
    }

    @Test
    fun textsEncodeAsTheSdkEncodesThem() {
        for (case in fx["texts"].list()) {
            val c = case.obj()
            val q = c["question"].str()
            val a = c["answer"].str()
            if (c.containsKey("error")) {
                try {
                    encoder.text(q, a)
                    fail("${Py.repr(q)} / ${Py.repr(a)} encoded; the SDK refuses it")
                } catch (e: DataError) {
                    assertEquals(c["error"], e.message)
                }
                continue
            }
            val (ids, labels) = encoder.text(q, a)
            assertEquals("input_ids of ${Py.repr(q)}", c["input_ids"].longs(), ids.toList())
            assertEquals("labels of ${Py.repr(q)}", c["labels"].longs(), labels.toList())
        }
    }

    @Test
    fun promptsEncodeAsTheSdkEncodesThem() {
        for (case in fx["prompts"].list()) {
            val c = case.obj()
            val (ids, length) = encoder.prompt(c["question"].str())
            assertEquals(c["input_ids"].longs(), ids.toList())
            assertEquals(c["length"].int(), length)
        }
    }

    @Test
    fun tokenizerPiecesAndIdsAreTheLibrarys() {
        for (case in fx["pieces"].list()) {
            val c = case.obj()
            val text = c["text"].str()
            c["pieces"]?.let { assertEquals("pieces of ${Py.repr(text)}", it.strings(), tokenizer.pieces(text).map { p -> p.first }) }
            assertEquals("ids of ${Py.repr(text)}", c["ids"].ints(), tokenizer.encode(text).toList())
        }
    }

    @Test
    fun decodeAnswerIsTheSdks() {
        for (case in fx["decode"].list()) {
            val c = case.obj()
            assertEquals(c["text"], encoder.decodeAnswer(c["ids"].ints()))
        }
    }
}
