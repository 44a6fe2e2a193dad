package org.mobilepeft.core

import java.io.File
import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test

/** The data-folder reader, its split and the batch order against fixtures/data.json. */
class DataFixtureTest {
    private val fx = Fixtures.json("data.json")
    private val folder = Fixtures.file("data")

    private fun rows(examples: List<FolderExample>) = examples.map { listOf(it.question, it.answer) }

    @Test
    fun everyExampleInFileOrder() {
        assertEquals(fx["all"].list(), rows(FolderDataset.load(folder)))
    }

    @Test
    fun theSplitIsTheSdks() {
        for (case in fx["splits"].list()) {
            val c = case.obj()
            val got = FolderDataset.load(folder, c["split"].str(), c["seed"].long(), c["eval_fraction"].double())
            assertEquals("split $c", c["examples"].list(), rows(got))
        }
    }

    @Test
    fun everyBadLineIsReportedInOneError() {
        val bad = fx["bad"].obj()
        val dir = Fixtures.file(bad["folder"].str())
        try {
            FolderDataset.load(dir)
            fail("the bad folder loaded")
        } catch (e: DataError) {
            assertEquals(bad["message"], e.message!!.replace(dir.path, "<folder>"))
        }
    }

    @Test
    fun numpyPermutationsBitForBit() {
        for (case in fx["permutations"].list()) {
            val c = case.obj()
            val seeds = c["seed"].longs().toLongArray()
            assertEquals("default_rng(${seeds.toList()}).permutation(${c["n"]})", c["permutation"].ints(), NumpyRandom.of(*seeds).permutation(c["n"].int()).toList())
        }
    }

    @Test
    fun theStreamVisitsExamplesInTheRuntimesOrder() {
        val s = fx["stream"].obj()
        val stream = DataStream(s["size"].int(), s["batch_size"].int(), StreamPosition(seed = s["seed"].long()))
        for ((i, batch) in s["batches"].list().withIndex()) assertEquals("batch $i", batch.ints(), stream.next().toList())
    }

    @Test
    fun unreadableImagesAreReportedPerLine() {
        val dir = Fixtures.copyTree(folder, File(Fixtures.tempDir("data-"), "d"))
        val broken = File(dir, "images/d2.png").path
        try {
            FolderDataset.load(dir, checkImage = { if (it.path == broken) throw IllegalStateException("truncated") })
            fail("a broken image loaded")
        } catch (e: DataError) {
            assertEquals(true, e.message!!.contains("line 3: cannot decode image '$broken' (IllegalStateException: truncated)"))
        }
    }

    @Test
    fun linksOutOfTheFolderAreRefused() {
        val dir = Fixtures.copyTree(folder, File(Fixtures.tempDir("data-"), "d"))
        val outside = File(dir.parentFile, "secret.png").also { File(folder, "images/d0.png").copyTo(it) }
        java.nio.file.Files.createSymbolicLink(File(dir, "images/link.png").toPath(), outside.toPath())
        File(dir, FolderDataset.ANNOTATIONS_FILE).appendText("{\"image\": \"link.png\", \"question\": \"q\", \"answer\": \"a\"}\n")
        try {
            FolderDataset.load(dir)
            fail("a link out of the folder loaded")
        } catch (e: DataError) {
            assertEquals(true, e.message!!.contains("line 12: image 'link.png' is a link to ${outside.canonicalPath}, outside the data folder"))
        }
    }

    @Test
    fun badLinesCanBeSkippedAndListed() {
        val skipped = mutableListOf<String>()
        val dir = Fixtures.file("data_bad")
        val got = FolderDataset.load(dir, skipBad = true, skipped = skipped)
        assertEquals(listOf(listOf("q", "a")), rows(got))
        assertEquals(17, skipped.size)
        assertEquals("${File(dir, FolderDataset.ANNOTATIONS_FILE)}:2: invalid JSON (Expecting value at column 1)", skipped[0])
        assertEquals("${File(dir, FolderDataset.ANNOTATIONS_FILE)}:1", got[0].source)
    }
}
